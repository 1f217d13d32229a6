"""render_resources and the options, without a docker daemon: what a request may and may not make of a
kernel's container or service spec."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from gp_docker import _pool
from gp_docker._options import DockerOptions, DockerSwarmOptions, parse_memory
from gp_docker._spec import resource_name

from gp_core import BackendError, InvalidOptionError, pattern_within
from gp_core.choices import parse_id
from gp_core.plugins import get_backend

KERNEL_ID = "0b7f4a4e-3c1d-4a8e-9d61-2f3c5b6a7d8e"
LOG = logging.getLogger("test")
CMD = ["python3", "/usr/local/bin/kernel-launchers/python/launch_ipykernel.py", "--kernel-id", KERNEL_ID]


def launch_env(**request: str) -> dict[str, str]:
    """The env core hands the backend: launch data plus the request's KERNEL_* values."""
    return {
        "KERNEL_ID": KERNEL_ID,
        "KERNEL_USERNAME": "alice",
        "KERNEL_LANGUAGE": "python",
        "GP_LAUNCH_TOKEN": "0123456789abcdef0123456789abcdef",
        "RESPONSE_ADDRESS": "127.0.0.1:8877",
        "PUBLIC_KEY": "cHVibGljLWtleQ==",
        "PORT_RANGE": "0..0",
        **request,
    }


def render(backend: str = "docker", options: dict[str, Any] | None = None, **request: str) -> dict[str, Any]:
    plugin = get_backend(backend)
    built = plugin.make_options({"image": "gp/kernel-py:test", **(options or {})})
    return plugin.hook.render_resources(
        kernel_id=KERNEL_ID,
        cmd=CMD,
        env=launch_env(**request),
        request_env=dict(request),  # as core computes it: what the request set
        resource_dir=None,
        options=built,
        namespace=None,
        log=LOG,
    )


@pytest.fixture(autouse=True)
def _defaults(no_docker_env: None) -> None:
    """Every test here sees the documented defaults, whatever GP_* the shell exports."""


def test_container_spec_carries_the_request_as_data():
    spec = render()
    assert spec["kind"] == "container"
    assert spec["name"] == f"alice-{KERNEL_ID}"
    assert spec["image"] == "gp/kernel-py:test"
    assert spec["cmd"] == CMD
    assert spec["labels"] == {
        "kernel_id": KERNEL_ID,
        "component": "kernel",
        "app": "gateway-provisioners",
        "gp.owner": "gp",
    }
    assert spec["user"] == "1000:100"
    assert spec["network"] == "bridge" and spec["hostname"] == spec["name"]
    assert spec["env"] == {
        **launch_env(),
        "KERNEL_IMAGE": "gp/kernel-py:test",
        "KERNEL_UID": "1000",
        "KERNEL_GID": "100",
    }
    json.dumps(spec)  # core persists and logs it: it must be plain JSON


def test_server_environment_never_reaches_the_kernel(monkeypatch):
    monkeypatch.setenv("GP_SERVER_SECRET", "hunter2")
    spec = render()
    assert "GP_SERVER_SECRET" not in spec["env"] and "PATH" not in spec["env"]


def test_swarm_spec_has_placement_and_the_same_env():
    spec = render("docker-swarm", {"placement_constraints": ["node.role==manager"]})
    assert spec["kind"] == "service"
    assert spec["placement_constraints"] == ["node.role==manager"]
    assert spec["env"] == render()["env"]


def test_host_network_sets_no_hostname():
    spec = render(options={"network": "host"})
    assert spec["network"] == "host" and spec["hostname"] is None


@pytest.mark.parametrize(
    ("username", "expected"),
    [
        ("alice", f"alice-{KERNEL_ID}"),
        ("Alice.Smith@Example.COM", f"alice-smith-example-com-{KERNEL_ID}"),
        ("$(rm -rf /); `id`", f"rm-rf-id-{KERNEL_ID}"),
        ("../../etc/passwd", f"etc-passwd-{KERNEL_ID}"),
        ("---", KERNEL_ID),
        ("", KERNEL_ID),
        ("名前", KERNEL_ID),
        ("x" * 200, f"{'x' * 26}-{KERNEL_ID}"),
    ],
)
def test_names_are_safe_for_docker_and_dns(username, expected):
    name = resource_name(username, KERNEL_ID)
    assert name == expected
    assert len(name) <= 63 and name[0].isalnum() and name[-1].isalnum()
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")


def test_hostile_values_stay_inert_in_env_and_argv():
    hostile = "$(touch /tmp/gp-pwned); `id` && echo '\" ${HOME}\n"
    spec = render(KERNEL_USERNAME=hostile, KERNEL_EXTRA=hostile)
    assert spec["env"]["KERNEL_USERNAME"] == hostile and spec["env"]["KERNEL_EXTRA"] == hostile
    assert spec["cmd"] == CMD  # env never leaks into argv
    assert spec["name"] == f"touch-tmp-gp-pwned-id-echo-{KERNEL_ID}"  # user part cut to 26


@pytest.mark.parametrize("name", ["KERNEL_X\n", "KERNEL_X=Y", "KERNEL X", "1X", ""])
def test_environment_names_are_checked_whole(name):
    # docker takes env as "NAME=value" strings: a name with '=' or a line break would say something else.
    with pytest.raises(BackendError, match="Environment variable name"):
        render(**{name: "v"})


# ------------------------------------------------------------------ uid / gid


@pytest.mark.parametrize("uid", ["0", "00", " 0", "0 ", "-0", "+0", "000000"])
def test_every_spelling_of_root_is_refused(uid):
    with pytest.raises(BackendError, match="prohibited"):
        render(KERNEL_UID=uid, KERNEL_GID="100")
    with pytest.raises(BackendError, match="prohibited"):
        render(KERNEL_UID="1000", KERNEL_GID=uid)


@pytest.mark.parametrize(
    "value",
    ["root", "1e3", "0x0", "1_000", "\u0661\u0660\u0660\u0660", "-1", "4294967295", "99999999999", " "],
)
def test_non_numeric_or_out_of_range_ids_are_refused(value):
    with pytest.raises(BackendError):
        render(KERNEL_UID=value)


def test_ids_are_normalised():
    spec = render(KERNEL_UID=" 01001 ", KERNEL_GID="+0200")
    assert spec["user"] == "1001:200"
    assert spec["env"]["KERNEL_UID"] == "1001" and spec["env"]["KERNEL_GID"] == "200"


def test_prohibited_ids_are_configurable_and_parsed(monkeypatch):
    monkeypatch.setenv("GP_PROHIBITED_UIDS", "0, 01000")
    with pytest.raises(BackendError, match="prohibited"):
        render()  # the default uid 1000 is now prohibited too
    assert render(KERNEL_UID="1001")["user"] == "1001:100"


def test_image_user_when_defaults_are_cleared():
    spec = render(options={"default_uid": "", "default_gid": ""})
    assert spec["user"] is None and "KERNEL_UID" not in spec["env"]


def test_uid_without_a_gid_is_refused_while_gids_are_policed(monkeypatch):
    with pytest.raises(BackendError, match="group id"):
        render(options={"default_gid": ""}, KERNEL_UID="1001")
    # prohibited_gids is a deny policy: a kernel.json [] adds nothing to the server's ["0"]...
    with pytest.raises(BackendError, match="group id"):
        render(options={"default_gid": "", "prohibited_gids": []}, KERNEL_UID="1001")
    # ...only the server can clear it.
    monkeypatch.setenv("GP_PROHIBITED_GIDS", "")
    spec = render(options={"default_gid": ""}, KERNEL_UID="1001")
    assert spec["user"] == "1001"


def test_id_parser():
    assert [parse_id(v, "x") for v in ("0", "00", " 0", "-0", "+0", "4294967294")] == [
        0,
        0,
        0,
        0,
        0,
        2**32 - 2,
    ]
    for bad in ("", "-1", "4294967295", "\u0663", "0.0", "1 0"):
        with pytest.raises(ValueError):
            parse_id(bad, "x")


# ------------------------------------------------------------------ image


def test_kernel_image_request_is_refused_without_an_allow_list():
    with pytest.raises(BackendError, match=r"KERNEL_IMAGE='evil/miner:latest' refused"):
        render(KERNEL_IMAGE="evil/miner:latest")


def test_kernel_image_request_matching_the_allow_list_is_used(monkeypatch):
    monkeypatch.setenv("GP_ALLOWED_IMAGES", "gp/kernel-*:*")
    spec = render(KERNEL_IMAGE="gp/kernel-r:1")
    assert spec["image"] == "gp/kernel-r:1" and spec["env"]["KERNEL_IMAGE"] == "gp/kernel-r:1"
    with pytest.raises(BackendError, match="accepts only 'gp/kernel-"):
        render(KERNEL_IMAGE="other/kernel:1")
    # kernel.json may narrow the server's list
    with pytest.raises(BackendError, match="accepts only 'gp/kernel-r:"):
        render(options={"allowed_images": ["gp/kernel-r:*"]}, KERNEL_IMAGE="gp/kernel-py:1")


# ------------------------------------------------------------------ policies: kernel.json only tightens


def test_kernel_json_cannot_clear_the_prohibited_uids():
    # kernel.json's prohibited_uids [] used to replace the server's ["0"]: KERNEL_UID=0 ran as root.
    options = get_backend("docker").make_options({"image": "x", "prohibited_uids": [], "prohibited_gids": []})
    assert options.prohibited_uids == ["0"] and options.prohibited_gids == ["0"]
    with pytest.raises(BackendError, match=r"KERNEL_UID='0' refused: user id 0 is prohibited"):
        render(options={"prohibited_uids": []}, KERNEL_UID="0", KERNEL_GID="100")
    with pytest.raises(BackendError, match="user id 1234 is prohibited"):
        render(options={"prohibited_uids": ["1234"]}, KERNEL_UID="1234")


def test_kernel_json_cannot_widen_the_allowed_images(monkeypatch):
    with pytest.raises(InvalidOptionError, match=r"'allowed_images' .*'\*' not allowed by the server"):
        render(options={"allowed_images": ["*"]}, KERNEL_IMAGE="evil/miner:latest")
    monkeypatch.setenv("GP_ALLOWED_IMAGES", "myorg/*")
    with pytest.raises(InvalidOptionError, match=r"from env GP_ALLOWED_IMAGES='myorg/\*'"):
        render(options={"allowed_images": ["other/*"]})
    assert render(options={"allowed_images": ["myorg/kernel-*"]}, KERNEL_IMAGE="myorg/kernel-r:1")["image"]


@pytest.mark.parametrize(
    ("allowed", "pattern", "within"),
    [
        ("myorg/*", "myorg/kernel-*", True),
        ("myorg/*", "myorg/kernel:1", True),
        ("*", "any/thing-*", True),
        ("a?c", "a?c", True),
        ("myorg/*", "other/*", False),
        ("myorg/k*", "myorg/*", False),
        ("a?c", "a*c", False),  # fnmatch would say "a*c" matches "a?c": it is no sub-pattern
        ("my[ab]/*", "myz/x-*", False),
        ("my[ab]/*", "mya/x-*", True),
        ("gp/kernel-*:*", "gp/kernel-r:*", True),
        ("gp/kernel-*:*", "gp/kernel-*", False),
        ("gp/kernel-?:1", "gp/kernel-[rs]:1", True),
        ("gp/kernel-[rs]:1", "gp/kernel-?:1", False),
    ],
)
def test_image_pattern_within(allowed, pattern, within):
    assert pattern_within(allowed, pattern) is within


def test_kernel_json_may_only_lower_the_resource_caps():
    from traitlets.config import Config, Configurable

    server = Configurable(config=Config({"DockerOptions": {"cpus": 2.0, "memory": "1g"}}))
    plugin = get_backend("docker")
    options = plugin.make_options({"cpus": 1.0, "memory": "512m", "max_cpus": 2.0}, parent=server)
    assert (options.cpus, options.memory, options.max_cpus) == (1.0, "512m", 2.0)
    for values, name in [
        ({"cpus": 4.0}, "cpus"),
        ({"cpus": 0}, "cpus"),  # 0 = no limit
        ({"memory": "2g"}, "memory"),
        ({"memory": ""}, "memory"),
        ({"max_cpus": 3.0}, "max_cpus"),  # the server's request cap is its cpus, 2
        ({"max_memory": "4g"}, "max_memory"),
    ]:
        with pytest.raises(InvalidOptionError, match=rf"'{name}' .*would loosen the server's {name}="):
            plugin.make_options(values, parent=server)
    # without server limits kernel.json sets them freely
    assert plugin.make_options({"cpus": 8.0, "max_memory": "64g"}).max_memory == "64g"


def test_kernel_image_equal_to_the_configured_one_is_fine():
    assert render(KERNEL_IMAGE="gp/kernel-py:test")["image"] == "gp/kernel-py:test"


def test_missing_image_is_a_clear_error():
    plugin = get_backend("docker")
    with pytest.raises(BackendError, match="No kernel image configured"):
        plugin.hook.render_resources(
            kernel_id=KERNEL_ID,
            cmd=CMD,
            env=launch_env(),
            request_env={},
            resource_dir=None,
            options=plugin.make_options({}),
            namespace=None,
            log=LOG,
        )


def test_image_from_env(monkeypatch):
    monkeypatch.setenv("GP_IMAGE_NAME", "site/kernel:2")
    plugin = get_backend("docker")
    spec = plugin.hook.render_resources(
        kernel_id=KERNEL_ID,
        cmd=CMD,
        env=launch_env(),
        request_env={},
        resource_dir=None,
        options=plugin.make_options({}),
        namespace=None,
        log=LOG,
    )
    assert spec["image"] == "site/kernel:2"


# ------------------------------------------------------------------ working dir, volumes, limits


def test_working_dir_is_mirrored_only_when_enabled():
    spec = render(KERNEL_WORKING_DIR="/home/alice/project")
    assert spec["working_dir"] is None and "KERNEL_WORKING_DIR" not in spec["env"]
    spec = render(options={"mirror_working_dirs": True}, KERNEL_WORKING_DIR="/home/alice/../alice/project")
    assert spec["working_dir"] == "/home/alice/project"
    assert spec["env"]["KERNEL_WORKING_DIR"] == "/home/alice/../alice/project"
    with pytest.raises(BackendError, match="absolute"):
        render(options={"mirror_working_dirs": True}, KERNEL_WORKING_DIR="relative/dir")


def test_mirroring_from_env_parses_false_as_false(monkeypatch):
    monkeypatch.setenv("GP_MIRROR_WORKING_DIRS", "false")
    assert render(KERNEL_WORKING_DIR="/data")["working_dir"] is None
    monkeypatch.setenv("GP_MIRROR_WORKING_DIRS", "true")
    assert render(KERNEL_WORKING_DIR="/data")["working_dir"] == "/data"


def test_volumes():
    spec = render(options={"volumes": ["/srv/data:/data:ro", "scratch:/scratch"]})
    assert spec["volumes"] == [
        {"source": "/srv/data", "target": "/data", "read_only": True, "type": "bind"},
        {"source": "scratch", "target": "/scratch", "read_only": False, "type": "volume"},
    ]
    for bad in (["/srv"], ["/a:relative"], ["/a:/b:rx"], [":/b"]):
        with pytest.raises(InvalidOptionError, match="volume"):
            render(options={"volumes": bad})


def test_limits_defaults_and_requests():
    spec = render(options={"cpus": 1.5, "memory": "1g"})
    assert spec["nano_cpus"] == 1_500_000_000 and spec["memory_bytes"] == 2**30
    capped = {"cpus": 1, "max_cpus": 4, "memory": "1g", "max_memory": "4g"}
    spec = render(options=capped, KERNEL_CPUS_LIMIT="2", KERNEL_MEMORY_LIMIT="2g")
    assert spec["nano_cpus"] == 2_000_000_000 and spec["memory_bytes"] == 2 * 2**30
    with pytest.raises(BackendError, match="at most 4"):
        render(options=capped, KERNEL_CPUS_LIMIT="5")
    with pytest.raises(BackendError, match="KERNEL_MEMORY_LIMIT"):
        render(options=capped, KERNEL_MEMORY_LIMIT="8g")
    with pytest.raises(BackendError, match="at most 1"):
        render(options={"cpus": 1}, KERNEL_CPUS_LIMIT="2")  # no max: the default is the cap
    assert render()["nano_cpus"] == 0 and render()["memory_bytes"] == 0
    for bad in ("lots", "-1", "nan", "inf"):
        with pytest.raises(BackendError):
            render(KERNEL_CPUS_LIMIT=bad)


@pytest.mark.parametrize("backend", ["docker", "docker-swarm"])
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KERNEL_MEMORY_LIMIT", "0"),
        ("KERNEL_MEMORY_LIMIT", "0b"),
        ("KERNEL_MEMORY_LIMIT", "0.0001k"),
        ("KERNEL_CPUS_LIMIT", "1e-10"),
        ("KERNEL_CPUS_LIMIT", "0"),
    ],
)
def test_a_request_cannot_lift_the_configured_limits(backend, name, value):
    # 0 reaches the docker API as mem_limit=None / nano_cpus=0: unlimited. Under a limit, that is refused.
    with pytest.raises(BackendError, match="no limit"):
        render(backend, options={"cpus": 1, "memory": "512m"}, **{name: value})


def test_without_configured_limits_a_zero_request_is_no_limit():
    spec = render(KERNEL_MEMORY_LIMIT="0", KERNEL_CPUS_LIMIT="0")
    assert spec["nano_cpus"] == 0 and spec["memory_bytes"] == 0


def test_memory_parser():
    assert parse_memory("512m", "m") == 512 * 2**20
    assert parse_memory("1.5GiB", "m") == 3 * 2**29
    assert parse_memory("1024", "m") == 1024
    assert parse_memory("", "m") == 0
    with pytest.raises(ValueError):
        parse_memory("1 gallon", "m")


# ------------------------------------------------------------------ options


def test_option_env_defaults(monkeypatch):
    monkeypatch.setenv("GP_DOCKER_NETWORK", "host")
    monkeypatch.setenv("GP_ALLOWED_IMAGES", "a/*, b/c:1")
    monkeypatch.setenv("GP_REMOVE_CONTAINER", "false")
    monkeypatch.setenv("GP_POLL_INTERVAL", "0.25")
    options = DockerOptions()
    assert options.network == "host"
    assert options.allowed_images == ["a/*", "b/c:1"]
    assert options.remove_container is False
    assert options.status_interval == 0.25
    assert options.prohibited_uids == ["0"] and options.prohibited_gids == ["0"]


def test_kernel_json_beats_env(monkeypatch):
    monkeypatch.setenv("GP_DOCKER_NETWORK", "host")
    assert get_backend("docker").make_options({"network": "kernels"}).network == "kernels"


def test_swarm_options_inherit_docker_config():
    from traitlets.config import Config

    config = Config({"DockerOptions": {"network": "overlay-net"}, "DockerSwarmOptions": {"stop_timeout": 2}})
    options = DockerSwarmOptions(config=config)
    assert options.network == "overlay-net" and options.stop_timeout == 2


@pytest.mark.parametrize(
    "values",
    [
        {"imgae": "typo"},
        {"default_uid": "root"},
        {"prohibited_uids": ["zero"]},
        {"memory": "lots"},
        {"cpus": -1},
        {"network": " "},
        {"working_dir": "relative"},
        {"status_interval": 0},
        {"pool_size": -1},
        {"pool_size": 33},
    ],
)
def test_invalid_options_are_refused_before_launch(values):
    with pytest.raises(InvalidOptionError):
        get_backend("docker").make_options(values)


def test_backends_do_not_share_option_classes():
    assert get_backend("docker").options_class is DockerOptions
    assert get_backend("docker-swarm").options_class is DockerSwarmOptions


def test_importing_core_does_not_import_docker():
    import subprocess
    import sys

    code = "import gp_core, gp_core.provisioner, gp_docker, gp_core.bootstrap, sys; print('docker' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_pool_size_is_the_docker_backends_only(monkeypatch):
    monkeypatch.setenv("GP_DOCKER_POOL_SIZE", "3")
    assert get_backend("docker").make_options({"image": "i"}).pool_size == 3
    assert get_backend("docker-swarm").make_options({"image": "i"}).pool_size == 0  # the env is not its
    with pytest.raises(InvalidOptionError, match="pool_size is not available on docker-swarm"):
        get_backend("docker-swarm").make_options({"image": "i", "pool_size": 1})


def test_pool_shapes_tell_apart_what_a_parked_container_cannot_change():
    base = _pool.pool_shape(render())
    assert base is not None
    assert _pool.pool_shape(render(KERNEL_FOO="other", KERNEL_USERNAME="bob")) == base  # assigned at launch
    assert _pool.pool_shape(render(KERNEL_UID="2000", KERNEL_GID="100")) != base  # set at creation
    assert _pool.pool_shape(render(PYTHONHASHSEED="1")) != base  # read as the interpreter starts
    assert _pool.pool_shape(render("docker", {"image": "other/image"})) != base
    assert _pool.pool_shape(render("docker-swarm")) is None  # a service: no stdin to assign through
    plugin = get_backend("docker")
    not_ours = plugin.hook.render_resources(
        kernel_id=KERNEL_ID,
        cmd=["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        env=launch_env(),
        request_env={},
        resource_dir=None,
        options=plugin.make_options({"image": "gp/kernel-py:test"}),
        namespace=None,
        log=LOG,
    )
    assert _pool.pool_shape(not_ours) is None  # only gp's launcher can park
