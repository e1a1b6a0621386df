"""docker's container create body (Config + HostConfig + NetworkingConfig) to a dockyard spec
map (supervisor/spec.py's fields), pure.

The fields dockyard has are translated; fields at their zero value are skipped; a field
dockyard cannot honour with a value that matters is refused (400) by name rather than
silently dropped: a client that asks for the host's pid namespace gets told, not ignored
(:data:`UNSUPPORTED`). What is left unread is the API call's own bookkeeping
(``AttachStdin``, ``StdinOnce``, ``ConsoleSize``...), a commit's fields (``Shell``,
``OnBuild``) and deprecated ones (``KernelMemory``): docs/api.md.
"""

from __future__ import annotations

from typing import Any

from workers.api.http import ApiError

#: Fields of Config (``Config.X``) and HostConfig (``X``) dockyard does not honour, with the
#: values besides null, "", 0, false, [] and {} that ask for nothing more than dockyard does:
#: any other value is refused by name (docs/api.md).
UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "Config.Domainname": (), "Config.MacAddress": (), "Config.NetworkDisabled": (),
    "PidMode": ("private",), "IpcMode": ("private", "shareable"), "Cgroup": (), "CgroupParent": (),
    "Links": (), "OomKillDisable": (), "OomScoreAdj": (), "MemorySwappiness": (-1,),
    "BlkioWeight": (), "BlkioWeightDevice": (), "BlkioDeviceReadBps": (), "BlkioDeviceWriteBps": (),
    "BlkioDeviceReadIOps": (), "BlkioDeviceWriteIOps": (), "IOMaximumIOps": (), "IOMaximumBandwidth": (),
    "DeviceRequests": (), "CpuRealtimePeriod": (), "CpuRealtimeRuntime": (), "CpusetMems": (),
    "CpuCount": (), "CpuPercent": (), "MaskedPaths": (), "ReadonlyPaths": (), "VolumeDriver": ("local",),
    "Runtime": ("runc", "dockyard"), "Isolation": ("default",), "Annotations": (), "StorageOpt": (),
}


def refuse_unsupported(config: dict[str, Any], host: dict[str, Any]) -> None:
    """Raises ApiError (400) naming the first field of :data:`UNSUPPORTED` set to a value that
    asks for something dockyard does not do."""
    for field, defaults in UNSUPPORTED.items():
        source, key = (config, field[7:]) if field.startswith("Config.") else (host, field)
        value = source.get(key)
        if value in (None, "", 0, False, [], {}) or value in defaults:
            continue
        where = field if source is config else f"HostConfig.{field}"
        raise ApiError(400, f"{where} {value!r} is not supported by dockyard (docs/api.md)")


def _strings(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ApiError(400, f"invalid {field}: must be a list of strings")
    return list(value)


def _map(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(400, f"invalid {field}: must be a JSON object")
    return value


def spec_from_create(body: Any, name: str | None) -> dict[str, Any]:
    """The spec map for ``POST /containers/create``'s body and ``name`` query parameter.

    Raises:
        ApiError: 400 for a body of the wrong shape or a field dockyard cannot honour.
    """
    config = _map(body, "body")
    host = _map(config.get("HostConfig"), "HostConfig")
    image = config.get("Image")
    if not isinstance(image, str) or not image:
        raise ApiError(400, "Config.Image: an image is required")
    refuse_unsupported(config, host)
    spec: dict[str, Any] = {"image": image}
    if name:
        spec["name"] = name
    _config_fields(config, spec)
    _host_fields(host, spec)
    _volumes_field(config, spec)
    _network_fields(config, host, spec)
    return spec


def _config_fields(config: dict[str, Any], spec: dict[str, Any]) -> None:
    if config.get("Cmd") is not None:
        spec["cmd"] = _strings(config["Cmd"], "Cmd")
    if config.get("Entrypoint") is not None:
        spec["entrypoint"] = _strings(config["Entrypoint"], "Entrypoint")
        if spec["entrypoint"] == [""]:
            spec["entrypoint"] = []
    if config.get("Env"):
        # docker keeps a bare NAME but the process never sees it: dropped here
        spec["env"] = [entry for entry in _strings(config["Env"], "Env") if "=" in entry]
    for key, field in (("WorkingDir", "workdir"), ("User", "user"), ("Hostname", "hostname")):
        if config.get(key):
            spec[field] = config[key]
    if config.get("Tty"):
        spec["tty"] = True
    if config.get("OpenStdin"):
        spec["open_stdin"] = True
    if config.get("Labels"):
        labels = _map(config["Labels"], "Labels")
        spec["labels"] = {str(key): str(value) for key, value in labels.items()}
    if config.get("StopSignal"):
        spec["stop_signal"] = str(config["StopSignal"])
    if config.get("StopTimeout") is not None:
        spec["stop_timeout"] = config["StopTimeout"]
    if config.get("Healthcheck"):
        spec["healthcheck"] = healthcheck(config["Healthcheck"])


def healthcheck(value: Any) -> dict[str, Any]:
    """docker's HealthConfig (durations in nanoseconds, 0: the default) to the spec's map."""
    health = _map(value, "Healthcheck")
    flags: dict[str, Any] = {}
    if health.get("Test"):
        flags["test"] = _strings(health["Test"], "Healthcheck.Test")
    for key, field in (("Interval", "interval"), ("Timeout", "timeout"), ("StartPeriod", "start_period")):
        if health.get(key):
            flags[field] = f"{int(health[key])}ns"
    if health.get("Retries"):
        flags["retries"] = int(health["Retries"])
    return flags


_RESOURCES = {"Memory": "memory", "MemorySwap": "memory_swap", "MemoryReservation": "memory_reservation",
              "NanoCpus": "nano_cpus", "CpuShares": "cpu_shares", "PidsLimit": "pids_limit"}


def resources(host: dict[str, Any]) -> dict[str, Any]:
    """The limits of a HostConfig (create) or an update body."""
    limits: dict[str, Any] = {}
    for key, field in _RESOURCES.items():
        value = host.get(key)
        if value:
            limits[field] = int(value)
    if host.get("CpusetCpus"):
        limits["cpuset_cpus"] = str(host["CpusetCpus"])
    quota, period = host.get("CpuQuota") or 0, host.get("CpuPeriod") or 0
    if quota > 0:
        limits["nano_cpus"] = int(quota * 1_000_000_000 // (period or 100_000))
    devices = host.get("Devices") or []
    if devices:
        limits["devices"] = [
            ":".join(part for part in (device.get("PathOnHost", ""), device.get("PathInContainer", ""),
                                       device.get("CgroupPermissions", "")) if part)
            for device in devices]
    if host.get("DeviceCgroupRules"):
        limits["device_cgroup_rules"] = _strings(host["DeviceCgroupRules"], "DeviceCgroupRules")
    return limits


def restart_policy(host: dict[str, Any]) -> str:
    """A HostConfig's (or an update body's) ``RestartPolicy`` as dockyard writes it
    (``on-failure:3``); "" when it names none."""
    policy = _map(host.get("RestartPolicy"), "RestartPolicy")
    name = policy.get("Name") or ""
    if not isinstance(name, str):
        raise ApiError(400, "invalid RestartPolicy.Name: must be a string")
    retries = int(policy.get("MaximumRetryCount") or 0)
    return f"{name}:{retries}" if name == "on-failure" and retries else name


def _host_fields(host: dict[str, Any], spec: dict[str, Any]) -> None:
    if host.get("CgroupnsMode") not in (None, "", "private"):  # every container has its own
        raise ApiError(400, f"invalid HostConfig.CgroupnsMode {host['CgroupnsMode']!r}: dockyard gives every "
                            "container a cgroup namespace of its own (private)")
    limits = resources(host)
    if limits:
        spec["resources"] = limits
    restart = restart_policy(host)
    if restart and restart != "no":
        spec["restart"] = restart
    if host.get("AutoRemove"):
        spec["auto_remove"] = True
    if host.get("UTSMode"):  # "host", or refused by the spec
        spec["uts"] = str(host["UTSMode"])
    if host.get("UsernsMode"):  # "host", or refused by the spec
        spec["userns_mode"] = str(host["UsernsMode"])
    if isinstance(host.get("Init"), bool):  # docker's --init (null: the daemon's default)
        spec["init"] = host["Init"]
    for key, field in (("CapAdd", "cap_add"), ("CapDrop", "cap_drop"), ("SecurityOpt", "security_opt"),
                       ("GroupAdd", "group_add"), ("Binds", "volumes"), ("VolumesFrom", "volumes_from"),
                       ("ExtraHosts", "add_host"), ("Dns", "dns"), ("DnsSearch", "dns_search"),
                       ("DnsOptions", "dns_option")):
        if host.get(key):
            spec[field] = _strings(host[key], key)
    if host.get("Privileged"):
        spec["privileged"] = True
    if host.get("ReadonlyRootfs"):
        spec["read_only"] = True
    if host.get("Sysctls"):
        spec["sysctls"] = {str(key): str(value) for key, value in _map(host["Sysctls"], "Sysctls").items()}
    if host.get("Tmpfs"):
        spec["tmpfs"] = [f"{path}:{options}" if options else path
                         for path, options in _map(host["Tmpfs"], "Tmpfs").items()]
    if host.get("Mounts"):
        spec["mounts"] = [mount_flag(mount) for mount in host["Mounts"]]
    if host.get("Ulimits"):
        spec["ulimits"] = [f"{limit['Name']}={limit['Soft']}:{limit['Hard']}" for limit in host["Ulimits"]]
    if host.get("ShmSize"):
        spec["shm_size"] = int(host["ShmSize"])
    log_config = _map(host.get("LogConfig"), "LogConfig")
    if log_config.get("Type") not in (None, "", "json-file", "local", "dockyard", "journald"):
        # docker's message, word for word (clients match it); docs/api.md says why
        raise ApiError(400, f"logger: no log driver named '{log_config['Type']}' is registered")
    options = {key: value for key, value in _map(log_config.get("Config"), "LogConfig.Config").items()
               if key in ("max-size", "max-file", "mode", "max-buffer-size")}
    if options:
        spec["log_options"] = options


def mount_flag(mount: Any) -> str:
    """One of HostConfig.Mounts as ``--mount``'s text (supervisor/mounts.py parses it)."""
    mount = _map(mount, "Mounts[]")
    kind = (mount.get("Type") or "volume").lower()
    fields = [f"type={kind}"]
    if mount.get("Source"):
        fields.append(f"source={mount['Source']}")
    if not mount.get("Target"):
        raise ApiError(400, "invalid mount config: Target is required")
    fields.append(f"target={mount['Target']}")
    if mount.get("ReadOnly"):
        fields.append("readonly")
    bind = mount.get("BindOptions") or {}
    if bind.get("Propagation"):
        fields.append(f"bind-propagation={bind['Propagation']}")
    volume = mount.get("VolumeOptions") or {}
    if volume.get("NoCopy"):
        fields.append("volume-nocopy")
    tmpfs = mount.get("TmpfsOptions") or {}
    if tmpfs.get("SizeBytes"):
        fields.append(f"tmpfs-size={int(tmpfs['SizeBytes'])}")
    if tmpfs.get("Mode"):
        fields.append(f"tmpfs-mode={int(tmpfs['Mode']):o}")
    return ",".join(f'"{field}"' if "," in field else field for field in fields)


def _volumes_field(config: dict[str, Any], spec: dict[str, Any]) -> None:
    """Config.Volumes (``{"/data": {}}``): anonymous volumes, unless a bind or mount has the path."""
    taken = {entry.split(":")[1] if ":" in entry else entry for entry in spec.get("volumes", [])}
    taken |= {field.split("target=")[1].split(",")[0] for field in spec.get("mounts", []) if "target=" in field}
    for path in _map(config.get("Volumes"), "Volumes"):
        if path not in taken:
            spec.setdefault("volumes", []).append(path)


def _network_fields(config: dict[str, Any], host: dict[str, Any], spec: dict[str, Any]) -> None:
    from workers.api.networks import endpoint_config

    mode = host.get("NetworkMode") or "default"
    endpoints = _map(_map(config.get("NetworkingConfig"), "NetworkingConfig").get("EndpointsConfig"),
                     "EndpointsConfig")
    if len(endpoints) > 1:  # docker before API 1.44: one network at create, more with connect
        raise ApiError(400, f"Container cannot be connected to network endpoints: {', '.join(endpoints)}")
    if mode in ("default", "bridge"):
        endpoint_config("bridge", endpoints.get("bridge") or endpoints.get("default"))  # refuses what it cannot do
    elif mode in ("host", "none") or mode.startswith("container:"):
        spec["network"] = mode
    else:  # a user-defined network (the caller checks that it exists)
        spec["network"] = mode
        endpoint = endpoint_config(mode, endpoints.get(mode))
        if endpoint:
            spec["endpoints"] = {mode: endpoint}
    # an EndpointsConfig entry for a network other than NetworkMode is not used (as docker's)
    publish = []
    for key, bindings in _map(host.get("PortBindings"), "PortBindings").items():
        for binding in bindings or [{}]:
            host_ip = (binding or {}).get("HostIp") or ""
            host_port = (binding or {}).get("HostPort") or ""
            port = key if "/" in key else f"{key}/tcp"
            if host_ip:
                publish.append(f"{host_ip}:{host_port}:{port}")
            else:
                publish.append(f"{host_port}:{port}" if host_port else port)
    if publish:
        spec["publish"] = publish
    if host.get("PublishAllPorts"):
        spec["publish_all"] = True


def labelled_volumes(body: Any) -> dict[str, dict[str, str]]:
    """The named volumes of HostConfig.Mounts with VolumeOptions.Labels: dockyard creates a
    volume with its labels before the container (``--mount`` takes no labels)."""
    host = _map(_map(body, "body").get("HostConfig"), "HostConfig")
    volumes = {}
    for mount in host.get("Mounts") or []:
        labels = ((mount or {}).get("VolumeOptions") or {}).get("Labels")
        if (mount.get("Type") or "volume") == "volume" and mount.get("Source") and labels:
            volumes[mount["Source"]] = {str(key): str(value) for key, value in labels.items()}
    return volumes
