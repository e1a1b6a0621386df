"""``dockyard build``: a parsed Dockerfile run step by step, as docker's classic builder.

Theory of operation: each stage starts from an image of the store, pulled with ``--pull``,
the empty image of ``FROM scratch`` or an earlier stage (:mod:`supervisor.build.base`);
every instruction makes a new image from the previous one. RUN runs its command in a real
dockyard container (created, started, waited for and removed through the Supervisor, with
the security defaults) and commits the container's upper directory as a layer; COPY and ADD
lay their files out in a scratch directory committed the same way; the other instructions
change only the config and add a history entry with ``empty_layer``. Before a step runs,
the cache (:mod:`supervisor.build.cache`) is asked for an image made from the same parent
with the same instruction (after substitution) and, for COPY/ADD, the same checksum of the
laid-out files.

The builder talks through ``say`` (the lines docker prints: ``Step 2/7 : RUN ...``, the RUN
output) and emits ``image.<id>.build`` when done.
"""

from __future__ import annotations

import copy
import functools
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from supervisor.build import dockerfile as df
from supervisor.build.base import check_runnable, resolve_base
from supervisor.build.cache import BuildCache
from supervisor.build.context import BuildError, expand_sources, tree_checksum
from supervisor.build.files import copy_sources, destination, lookup_owner
from supervisor.images import containerfs
from supervisor.images.layout import chain_ids
from supervisor.images.oci import image_config
from supervisor.images.references import parse_reference
from supervisor.images.image import NewImage, rfc3339
from supervisor.images.tarsafe import extract
from supervisor.errors import NotFound
from supervisor.registry.manifest import Platform
from supervisor.spec import ContainerSpec

DEFAULT_SHELL = ("/bin/sh", "-c")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DURATION_FLAGS = {"interval": "Interval", "timeout": "Timeout", "start-period": "StartPeriod",
                  "start-interval": "StartInterval"}


@dataclass
class Options:
    tags: list[str] = field(default_factory=list)
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    no_cache: bool = False
    network: str = "bridge"
    pull: bool = False
    platform: Platform | None = None    # None: the base's (this machine's for FROM scratch)


@dataclass
class StageState:
    image: Any                      # supervisor.images.image.Image
    config: dict[str, Any]
    args: dict[str, str] = field(default_factory=dict)
    cmd_set: bool = False


class Output:
    """The Attachment RUN's container writes to: its output goes to ``say`` as it comes."""

    def __init__(self, say):
        self.say = say

    async def send(self, stream: str, data: bytes) -> None:
        await self.say(data.decode("utf-8", errors="replace"))


class Builder:
    def __init__(self, supervisor: Any, context: Path, text: str, options: Options, say):
        self.sup = supervisor
        self.store = supervisor.images
        self.context = context
        self.options = options
        self.say = say
        try:
            self.file = df.parse(text)
        except df.DockerfileError as exc:
            raise BuildError(str(exc)) from None
        self.cache = BuildCache(Path(supervisor.config.root) / "build-cache.json")
        self.stage_images: dict[int, Any] = {}
        self.pulled: dict[str, str] = {}    # --pull: base name -> the image id pulled for it
        self.step = 0
        self.cached_steps = 0

    async def build(self) -> dict[str, Any]:
        last = self.file.stage(self.options.target) if self.options.target else len(self.file.stages) - 1
        stages = self.file.stages[:last + 1]
        self.total = sum(1 + len(stage.instructions) for stage in stages)
        global_args = self.global_args()
        image = None
        for stage in stages:
            image = await self.build_stage(stage, global_args, is_last=stage.index == last)
            self.stage_images[stage.index] = image
        assert image is not None
        await self.say(f"Successfully built {image.id[:12]}\n")
        for tag in self.options.tags:
            await trio.to_thread.run_sync(self.store.tag, image.id, tag)
            await self.say(f"Successfully tagged {parse_reference(tag)}\n")  # docker names the tag: web:latest
        self.sup.emit("image", "build", image.id, {"name": ",".join(self.options.tags), "steps": str(self.total),
                                                   "cached": str(self.cached_steps)})
        return {"id": image.id, "tags": self.options.tags, "steps": self.total, "cached": self.cached_steps}

    def global_args(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.file.global_args:
            for name, default in instruction.pairs:
                if name in self.options.build_args:
                    values[name] = self.options.build_args[name]
                elif default is not None:
                    values[name] = self.expand(default, values, instruction)
        return values

    def expand(self, word: str, environment: dict[str, str], instruction: df.Instruction) -> str:
        try:
            return df.expand(word, environment, self.file.escape, instruction.line)
        except df.DockerfileError as exc:
            raise BuildError(str(exc)) from None

    async def announce(self, text: str) -> None:
        self.step += 1
        await self.say(f"Step {self.step}/{self.total} : {text}\n")

    async def build_stage(self, stage: df.Stage, global_args: dict[str, str], is_last: bool) -> Any:
        await self.announce(f"FROM {stage.base}" + (f" AS {stage.name}" if stage.name else ""))
        base = df.expand(stage.base, global_args, self.file.escape, stage.line)
        earlier = next((s.index for s in self.file.stages if s.name == base.lower() and s.index < stage.index), None)
        if earlier is not None:
            image = self.stage_images[earlier]
        else:
            image = await resolve_base(self.sup, base, stage.line, pull=self.options.pull,
                                       platform=self.options.platform, say=self.say, pulled=self.pulled)
        await self.say(f" ---> {image.id[:12]}\n")
        state = StageState(image=image, config=copy.deepcopy(image.config))
        if not any(entry.startswith("PATH=") for entry in state.config.get("Env") or []):
            # docker's initializeStage: a base without PATH gets the default one
            state.config["Env"] = [*(state.config.get("Env") or []), f"PATH={DEFAULT_PATH}"]
        triggers = state.config.pop("OnBuild", None) or []
        for text in triggers:
            await self.run_instruction(state, df.parse_line(stage.line, text, self.file.escape), global_args)
        for instruction in stage.instructions:
            await self.run_instruction(state, instruction, global_args)
        if is_last and self.options.labels:
            state.config.setdefault("Labels", {}).update(self.options.labels)
            await self.metadata_step(state, "LABEL " + " ".join(f"{k}={v}" for k, v in self.options.labels.items()),
                                     announce=False)
        return state.image

    def environment(self, state: StageState) -> dict[str, str]:
        env = dict(state.args)
        for entry in state.config.get("Env") or []:
            key, _, value = entry.partition("=")
            env[key] = value
        return env

    async def run_instruction(self, state: StageState, instruction: df.Instruction, global_args: dict[str, str]):
        keyword = instruction.keyword
        if keyword in ("RUN", "COPY", "ADD"):
            await self.announce(instruction.original)
            if keyword == "RUN":
                await self.run_step(state, instruction)
            else:
                await self.copy_step(state, instruction)
            return
        env = self.environment(state)
        config = state.config
        if keyword == "ENV":
            text = []
            for key, value in instruction.pairs:
                key, value = self.expand(key, env, instruction), self.expand(value or "", env, instruction)
                config["Env"] = [e for e in config.get("Env") or [] if e.partition("=")[0] != key] + [f"{key}={value}"]
                env[key] = value
                text.append(f"{key}={value}")
            summary = "ENV " + " ".join(text)
        elif keyword == "ARG":
            for name, default in instruction.pairs:
                if name in self.options.build_args:
                    state.args[name] = self.options.build_args[name]
                elif default is not None:
                    state.args[name] = self.expand(default, env, instruction)
                elif name in global_args:
                    state.args[name] = global_args[name]
            summary = "ARG " + " ".join(name + ("" if default is None else f"={default}")
                                        for name, default in instruction.pairs)
        elif keyword == "LABEL":
            labels = config.setdefault("Labels", {}) or {}
            config["Labels"] = labels
            for key, value in instruction.pairs:
                labels[self.expand(key, env, instruction)] = self.expand(value or "", env, instruction)
            summary = "LABEL " + " ".join(f"{k}={v}" for k, v in labels.items())
        elif keyword == "WORKDIR":
            path = self.expand(instruction.arguments[0], env, instruction)
            config["WorkingDir"] = os.path.normpath(os.path.join(config.get("WorkingDir") or "/", path))
            summary = "WORKDIR " + config["WorkingDir"]
        elif keyword == "USER":
            config["User"] = self.expand(instruction.arguments[0], env, instruction)
            summary = "USER " + config["User"]
        elif keyword == "STOPSIGNAL":
            config["StopSignal"] = self.expand(instruction.arguments[0], env, instruction)
            summary = "STOPSIGNAL " + config["StopSignal"]
        elif keyword == "EXPOSE":
            ports = config.setdefault("ExposedPorts", {}) or {}
            config["ExposedPorts"] = ports
            for word in df.expand_words(instruction.arguments, env, self.file.escape, instruction.line):
                port, _, protocol = word.partition("/")
                ports[f"{port}/{(protocol or 'tcp').lower()}"] = {}
            summary = "EXPOSE " + " ".join(sorted(ports))
        elif keyword == "VOLUME":
            volumes = config.setdefault("Volumes", {}) or {}
            config["Volumes"] = volumes
            for word in df.expand_words(instruction.arguments, env, self.file.escape, instruction.line):
                volumes[word] = {}
            summary = "VOLUME " + str(sorted(volumes))
        elif keyword in ("CMD", "ENTRYPOINT"):
            argv = self.command(state, instruction)
            name = "Cmd" if keyword == "CMD" else "Entrypoint"
            config[name] = argv
            if keyword == "ENTRYPOINT" and not state.cmd_set:
                config["Cmd"] = None    # docker: a new ENTRYPOINT drops the base image's CMD
            state.cmd_set = state.cmd_set or keyword == "CMD"
            summary = f"{keyword} {argv}"
        elif keyword == "SHELL":
            config["Shell"] = list(instruction.arguments)
            summary = f"SHELL {list(instruction.arguments)}"
        elif keyword == "HEALTHCHECK":
            config["Healthcheck"] = self.healthcheck(instruction, state)
            summary = instruction.original
        elif keyword == "ONBUILD":
            config["OnBuild"] = [*(config.get("OnBuild") or []), instruction.arguments[0]]
            summary = instruction.original
        elif keyword == "MAINTAINER":
            summary = instruction.original
        else:  # pragma: no cover - the parser knows no other keyword
            raise BuildError(f"Dockerfile line {instruction.line}: {keyword} is not supported")
        await self.announce(instruction.original)
        await self.metadata_step(state, summary)

    def command(self, state: StageState, instruction: df.Instruction) -> list[str] | None:
        if instruction.exec_form:
            return list(instruction.arguments)
        if not instruction.arguments:
            return None
        return [*(state.config.get("Shell") or DEFAULT_SHELL), instruction.arguments[0]]

    def healthcheck(self, instruction: df.Instruction, state: StageState) -> dict[str, Any]:
        from supervisor.durations import parse_duration

        if instruction.arguments == ("NONE",):
            return {"Test": ["NONE"]}
        check: dict[str, Any] = {"Test": list(instruction.arguments)}
        for flag, name in DURATION_FLAGS.items():
            value = instruction.flag(flag)
            if value is not None:
                check[name] = int(parse_duration(value, f"HEALTHCHECK --{flag}") * 1_000_000_000)
        retries = instruction.flag("retries")
        if retries is not None:
            if not retries.isdigit():
                raise BuildError(f"Dockerfile line {instruction.line}: HEALTHCHECK --retries must be a number")
            check["Retries"] = int(retries)
        return check

    # --- steps ------------------------------------------------------------------------

    async def cached(self, state: StageState, created_by: str, checksum: str = "") -> bool:
        if self.options.no_cache:
            return False
        image_id = self.cache.lookup(state.image.id, created_by, checksum)
        if image_id is None:
            return False
        try:
            image = await trio.to_thread.run_sync(self.store.resolve, image_id)
        except NotFound:
            return False
        await self.say(" ---> Using cache\n")
        self.adopt(state, image)
        self.cached_steps += 1
        return True

    def adopt(self, state: StageState, image: Any) -> None:
        state.image = image
        state.config = copy.deepcopy(image.config)

    async def made(self, state: StageState, image: Any, created_by: str, checksum: str = "") -> None:
        await trio.to_thread.run_sync(self.cache.record, state.image.id, created_by, checksum, image.id)
        self.adopt(state, image)
        await self.say(f" ---> {image.id[:12]}\n")

    async def metadata_step(self, state: StageState, summary: str, announce: bool = True) -> None:
        created_by = f"/bin/sh -c #(nop)  {summary}"
        key = created_by + "\0" + repr(sorted(state.config.items()))
        if await self.cached(state, key):
            await self.say(f" ---> {state.image.id[:12]}\n")
            return
        image = await trio.to_thread.run_sync(self.config_image, state.image, state.config, created_by)
        await self.made(state, image, key)

    def config_image(self, parent: Any, config: dict[str, Any], created_by: str) -> Any:
        """An image with ``parent``'s layers, ``config`` and one more empty_layer history entry."""
        now = rfc3339(self.store._clock())
        history = [*(parent.document.get("history") or []), {"created": now, "created_by": created_by,
                                                             "empty_layer": True}]
        config_bytes = image_config(list(parent.diff_ids), config, base=parent.document, history=history, created=now)
        layers = tuple(self.store._find_layer(chain) for chain in chain_ids(list(parent.diff_ids)))
        with self.store.stage() as stage:
            return self.store.commit(stage, [NewImage(config_bytes, layers, ())])[0]

    async def run_step(self, state: StageState, instruction: df.Instruction) -> None:
        check_runnable(self.options.platform, instruction.line)
        argv = self.command(state, instruction) or []
        used_args = {name: value for name, value in state.args.items()}
        prefix = f"|{len(used_args)} " + " ".join(f"{k}={v}" for k, v in sorted(used_args.items())) + " " \
            if used_args else ""
        created_by = prefix + (" ".join(argv) if not instruction.exec_form else repr(argv))
        if await self.cached(state, created_by):
            await self.say(f" ---> {state.image.id[:12]}\n")
            return
        proxies = {name: value for name, value in self.options.build_args.items() if name in df.PREDEFINED_ARGS}
        env = {**proxies, **used_args,
               **{e.partition("=")[0]: e.partition("=")[2] for e in state.config.get("Env") or []}}
        spec = ContainerSpec(
            image=state.image.id, cmd=tuple(argv), entrypoint=(), env=tuple(f"{k}={v}" for k, v in env.items()),
            workdir=state.config.get("WorkingDir") or "", user=state.config.get("User") or "",
            name=f"build-{secrets.token_hex(6)}", network=self.options.network, healthcheck={"test": ["NONE"]},
        )
        container = await self.sup.create(spec)
        try:
            await self.say(f" ---> Running in {container.id[:12]}\n")
            await self.sup.start(container.id, attach=Output(self.say))
            code = await self.sup.wait_for(container)
            if code != 0:
                raise BuildError(f"The command '{' '.join(argv)}' returned a non-zero code: {code}")
            image = await trio.to_thread.run_sync(functools.partial(
                self.store.commit_container, str(container.upper), state.image.id, config=state.config,
                created_by=created_by))
        finally:
            with trio.CancelScope(shield=True):
                await self.sup.remove(container.id, force=True, volumes=True)
        await self.made(state, image, created_by)

    async def copy_step(self, state: StageState, instruction: df.Instruction) -> None:
        env = self.environment(state)
        words = [self.expand(word, env, instruction) if not instruction.exec_form else word
                 for word in instruction.arguments]
        sources, dest = words[:-1], destination(words[-1], state.config.get("WorkingDir") or "/")
        chown = instruction.flag("chown")
        chmod = instruction.flag("chmod")
        try:
            mode = int(chmod, 8) if chmod is not None else None
        except ValueError:
            raise BuildError(f"Dockerfile line {instruction.line}: --chmod=`{chmod}` is not an octal mode") from None
        scratch = Path(tempfile.mkdtemp(prefix="build-", dir=self.store.tmp_dir))
        try:
            work = scratch / "layer"
            work.mkdir()
            source_from = instruction.flag("from")
            source_root = self.context
            if source_from is not None:
                source_root = await self.from_image(source_from, sources, scratch, env, instruction)
                sources = [os.path.basename(s.rstrip("/")) or "rootfs" for s in sources]
            layers = tuple(state.image.layers)
            owner = lookup_owner(self.expand(chown, env, instruction), layers, instruction.keyword) if chown else (0, 0)
            paths = expand_sources(source_root, sources, instruction.keyword)
            await trio.to_thread.run_sync(functools.partial(
                copy_sources, work, paths, dest, layers, owner=owner, mode=mode,
                extract_tars=instruction.keyword == "ADD" and source_from is None, instruction=instruction.keyword))
            checksum = await trio.to_thread.run_sync(tree_checksum, work)
            created_by = f"/bin/sh -c #(nop) {instruction.keyword} {checksum} in {dest}"
            if await self.cached(state, created_by, checksum):
                await self.say(f" ---> {state.image.id[:12]}\n")
                return
            image = await trio.to_thread.run_sync(functools.partial(
                self.store.commit_container, str(work), state.image.id, config=state.config, created_by=created_by))
        finally:
            await trio.to_thread.run_sync(functools.partial(shutil.rmtree, scratch, ignore_errors=True))
        await self.made(state, image, created_by, checksum)

    async def from_image(self, name: str, sources: list[str], scratch: Path, env: dict[str, str],
                         instruction: df.Instruction) -> Path:
        """COPY --from: the sources taken out of a stage's (or an image's) files into ``scratch/from``."""
        name = self.expand(name, env, instruction)
        index = next((s.index for s in self.file.stages if s.name == name.lower() or str(s.index) == name), None)
        if index is not None and index in self.stage_images:
            image = self.stage_images[index]
        else:
            try:
                image = await trio.to_thread.run_sync(self.store.resolve, name)
            except NotFound as exc:
                raise BuildError(f"Dockerfile line {instruction.line}: COPY --from={name}: {exc}") from None
        root = scratch / "from"
        root.mkdir()
        empty = scratch / "empty"
        empty.mkdir()
        for source in sources:
            if any(char in source for char in "*?["):
                raise BuildError(f"Dockerfile line {instruction.line}: globs in COPY --from are not supported")
            tar_path = scratch / "from.tar"

            def take(source: str = source) -> None:
                with open(tar_path, "wb") as output:
                    containerfs.copy_out(name, str(empty), image.layers, source, output)
                with open(tar_path, "rb") as archive:
                    extract(archive, root)

            try:
                await trio.to_thread.run_sync(take)
            except NotFound as exc:
                raise BuildError(f"Dockerfile line {instruction.line}: COPY --from={name}: {source}: {exc}") from None
        return root
