"""The import graph of supervisor/, bus/, logs/ and workers/ flows one way (issue 16 item 4).

The graph is built statically from the source (``ast``): every ``import`` and ``from ...
import``, deferred ones inside functions included, since a deferred import still ties two
modules together. (A package's ``__init__`` counts where it is named, not where Python runs
it before a submodule: a package that imports its own modules is not a cycle. Only
``supervisor/__init__.py`` and ``supervisor/network/__init__.py`` hold code.) Two checks:

* no cycle between modules;
* no import against the direction of :data:`LAYERS`: each layer names the layers it may
  import (not transitively); a module may import any module of its own layer.

docs/architecture.md, "Which package may import which", says the same in words.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("supervisor", "bus", "logs", "workers")

#: layer -> (its modules: a module belongs to the layer of its longest listed prefix,
#: the layers it may import, why).
LAYERS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "bus": (("bus",), (),
            "the wire: envelope, codec, sockets and clients; knows nothing of containers"),
    "logs": (("logs",), (),
             "the log store's format and files, and the one atomic write; knows nothing of the daemon"),
    "leaves": (("supervisor", "supervisor.errors", "supervisor.durations", "supervisor.backoff",
                "supervisor.health", "supervisor.restart", "supervisor.arguments", "supervisor.operations",
                "supervisor.optable", "supervisor.capabilities", "supervisor.terminal", "supervisor.logconfig", "supervisor.filters", "workers"),
               (),
               "small modules that import only each other: what the CLI and the workers may share"),
    "model": (("supervisor.config", "supervisor.configfile", "supervisor.spec", "supervisor.container",
               "supervisor.state", "supervisor.resources", "supervisor.network", "supervisor.privileges",
               "supervisor.seccomp", "supervisor.mounts", "supervisor.ulimits", "supervisor.build.dockerfile", "supervisor.build.ignore"),
              ("leaves", "logs"),
              "the daemon's definitions: validated specs and config, the state machine, the network's "
              "names and addresses"),
    "mechanics": (("supervisor.runtime", "supervisor.images", "supervisor.network.links",
                   "supervisor.network.manager", "supervisor.network.nat", "supervisor.network.proxy",
                   "supervisor.network.user", "supervisor.network.dns", "supervisor.network.isolation",
                   "supervisor.registry", "supervisor.store", "supervisor.journal", "supervisor.stats",
                   "supervisor.systemd", "supervisor.volumes", "supervisor.volumedriver", "supervisor.userns"),
                  ("model", "leaves", "logs"),
                  "Linux, files and the registry protocol: they know nothing of the lifecycle or the bus"),
    "services": (("supervisor.api", "supervisor.attach", "supervisor.exec", "supervisor.logbuffer",
                  "supervisor.logpump", "supervisor.logspool", "supervisor.streambuffer", "supervisor.lifecycle", "supervisor.services",
                  "supervisor.locallogs", "supervisor.workers", "supervisor.registry.service",
                  "supervisor.registry.store_adapter", "supervisor.build"),
                 ("mechanics", "model", "leaves", "logs"),
                 "the container lifecycle and the services beside it: they decide, the mechanics act; "
                 "no bus"),
    "handlers": (("supervisor.handlers", "supervisor.loghandlers", "supervisor.registryhandlers",
                  "supervisor.volumehandlers", "supervisor.eventkeyhandlers",
                  "supervisor.networkhandlers", "supervisor.buildhandlers"),
                 ("services", "mechanics", "model", "leaves", "logs", "bus.filters", "bus.remote"),
                 "one handler per bus operation: checked arguments in, the Supervisor called, a reply out; "
                 "events.replay filters as the publisher does (bus/filters.py); the remote subscribers' "
                 "key files are bus/remote.py's"),
    "daemon": (("supervisor.daemon",),
               ("handlers", "services", "mechanics", "model", "leaves", "logs", "bus"),
               "the daemon process: the Supervisor served over the bus, with its journal and workers"),
    "workers": (("workers.monitor", "workers.logcollector", "workers.api"),
                ("bus", "logs", "leaves", "supervisor.images.tarsafe"),
                "bus clients in processes of their own: they act only through requests; the API's "
                "`PUT /containers/{id}/archive` extracts the client's tar with the safe extractor"),
    "worker runner": (("workers.runner", "workers.__main__"),
                      ("workers", "leaves"),
                      "runs one worker (`python -m workers`, `dockyard worker`); loads it by name"),
    "oci runtime": (("supervisor.ociruntime",),
                    ("mechanics", "model", "leaves", "logs"),
                    "`dockyard-runtime`, the OCI runtime command line: the init stage and cgroups of the "
                    "mechanics, no daemon, no bus"),
    "cli": (("supervisor.cli",),
            ("daemon", "worker runner", "model", "leaves", "bus",
             "supervisor.images.tarsafe", "supervisor.registry.progress", "supervisor.build.ignore"),
            "the command line, a bus client; `dockyard daemon` and `dockyard worker` run those in "
            "its process; `cp` extracts with the safe extractor, pull/push draw the progress"),
}


def modules(root: Path = REPO) -> dict[str, Path]:
    """Every module of the four packages: dotted name -> file."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def import_graph(known: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the modules of the four packages it imports."""

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        targets: set[str | None] = set()
        parts = module.split(".")
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    targets.add(resolve(alias.name))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = parts if path.name == "__init__.py" else parts[:-1]
                    base = base[:len(base) - node.level + 1]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                for alias in node.names:  # `from package import module`, or a name of `source`
                    named = f"{source}.{alias.name}"
                    targets.add(named if named in known else resolve(source))
        targets.discard(None)
        targets.discard(module)
        graph[module] = {target for target in targets if target in known}
    return graph


#: Packages whose entry in LAYERS is the package module alone, not everything below it: a
#: new module of theirs must be placed in a layer knowingly.
PACKAGES_ALONE = {"supervisor", "workers"}


def layer_of(module: str) -> str:
    best, length = None, -1
    for layer, (prefixes, _, _) in LAYERS.items():
        for prefix in prefixes:
            below = module.startswith(prefix + ".") and prefix not in PACKAGES_ALONE
            if (module == prefix or below) and len(prefix) > length:
                best, length = layer, len(prefix)
    assert best is not None, f"{module} is in no layer: add it to LAYERS in {__file__}"
    return best


def allowed(importer: str, imported: str) -> bool:
    layer, target = layer_of(importer), layer_of(imported)
    may = LAYERS[layer][1]
    return layer == target or target in may or any(
        imported == name or imported.startswith(name + ".") for name in may if name not in LAYERS)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each as a cycle
    a person can follow."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def describe(component: list[str], graph: dict[str, set[str]]) -> str:
    members = set(component)
    return "; ".join(f"{module} -> {', '.join(sorted(graph[module] & members))}" for module in component)


def test_there_is_no_import_cycle() -> None:
    graph = import_graph(modules())
    found = cycles(graph)
    assert not found, "import cycles (deferred imports count too):\n" + "\n".join(
        describe(component, graph) for component in found)


def test_every_import_follows_the_layers() -> None:
    graph = import_graph(modules())
    for module in graph:
        layer_of(module)  # every module is in a layer
    wrong = [f"{importer} ({layer_of(importer)}) imports {imported} ({layer_of(imported)})"
             for importer, targets in sorted(graph.items()) for imported in sorted(targets)
             if not allowed(importer, imported)]
    assert not wrong, "imports against the layers of tests/unit/test_import_graph.py:\n" + "\n".join(wrong)


def test_the_layers_themselves_flow_one_way() -> None:
    edges = {layer: {name for name in may if name in LAYERS} for layer, (_, may, _) in LAYERS.items()}
    assert not cycles(edges)
    for layer, (_, may, _) in LAYERS.items():
        for name in may:
            assert name in LAYERS or layer_of(name) != layer, f"{layer}: {name} is neither a layer nor a module"


# --- the check itself, on a made-up tree ---------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
        (tmp_path / package / "__init__.py").touch()
    return modules(tmp_path)


def test_a_deferred_import_closing_a_cycle_is_found(tmp_path: Path) -> None:
    known = _tree(tmp_path, {
        "supervisor/config.py": "def names():\n    from workers import WORKERS\n    return WORKERS\n",
        "workers/__init__.py": "def main():\n    from supervisor.daemon import configure_logging\n",
        "supervisor/daemon.py": "from supervisor.config import names\n",
    })
    graph = import_graph(known)
    assert cycles(graph) == [["supervisor.config", "supervisor.daemon", "workers"]]


def test_relative_and_from_package_imports_are_resolved(tmp_path: Path) -> None:
    known = _tree(tmp_path, {
        "supervisor/cli/__init__.py": "from .common import x\nfrom supervisor import operations\n",
        "supervisor/cli/common.py": "from ..errors import E\n",
        "supervisor/errors.py": "",
        "supervisor/operations.py": "",
    })
    graph = import_graph(known)
    assert graph["supervisor.cli"] == {"supervisor.cli.common", "supervisor.operations"}
    assert graph["supervisor.cli.common"] == {"supervisor.errors"}


def test_an_import_against_the_layers_is_refused() -> None:
    assert not allowed("logs.store", "supervisor.errors")
    assert not allowed("bus.client", "supervisor.operations")
    assert not allowed("workers.monitor", "supervisor.api")
    assert not allowed("supervisor.api", "supervisor.handlers")
    assert not allowed("supervisor.config", "workers.runner")
    assert allowed("supervisor.handlers", "supervisor.api")
    assert allowed("supervisor.cli.files", "supervisor.images.tarsafe")
    assert not allowed("supervisor.cli.files", "supervisor.images.store")
