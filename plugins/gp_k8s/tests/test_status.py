"""Pod status: what counts as alive, what fails a launch at once, and one watch for every kernel."""

from __future__ import annotations

import asyncio

import pytest
from gp_k8s import _kube, _pods, _status
from gp_k8s._options import K8sOptions

from gp_core import LaunchError


def pod(
    phase="Pending", waiting=None, terminated=None, running=False, conditions=(), uid="u1", deleting=False
):
    state = {}
    if waiting:
        state["waiting"] = {"reason": waiting[0], "message": waiting[1]}
    if terminated:
        state["terminated"] = {"exitCode": terminated[0], "reason": terminated[1]}
    if running:
        state["running"] = {"startedAt": "now"}
    metadata = {
        "uid": uid,
        "name": "p",
        "namespace": "n",
        **({"deletionTimestamp": "now"} if deleting else {}),
    }
    status = {"phase": phase, "conditions": list(conditions)}
    if state:
        status["containerStatuses"] = [{"name": "kernel", "state": state}]
    return {"metadata": metadata, "status": status}


@pytest.mark.parametrize(
    ("manifest", "alive", "failure"),
    [
        (pod(), True, None),
        (pod(waiting=("ContainerCreating", "pulling slowly")), True, None),  # a slow pull is progress
        (pod("Running", running=True), True, None),
        (pod(waiting=("ErrImageNeverPull", "not present")), True, "ErrImageNeverPull: not present"),
        (pod(waiting=("ImagePullBackOff", "back-off")), True, "ImagePullBackOff: back-off"),
        (pod(waiting=("InvalidImageName", "bad")), True, "InvalidImageName: bad"),
        (
            pod(waiting=("CreateContainerConfigError", "secret x not found")),
            True,
            "CreateContainerConfigError",
        ),
        (pod(waiting=("CrashLoopBackOff", "back-off 10s")), True, "CrashLoopBackOff"),
        (pod("Running", terminated=(137, "OOMKilled")), False, "exited with code 137 (OOMKilled)"),
        (pod("Failed", terminated=(3, "Error")), False, "exited with code 3 (Error)"),
        (pod("Succeeded", terminated=(0, "Completed")), False, "code 0"),
        (
            pod(
                conditions=[
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/1 nodes",
                    }
                ]
            ),
            True,
            "Unschedulable: 0/1 nodes",
        ),
        (pod("Running", running=True, deleting=True), True, None),  # going, but not gone yet
    ],
)
def test_pod_states(manifest, alive, failure):
    status = _kube.summarize(manifest)
    assert status.alive is alive
    if failure is None:
        assert status.failure is None
    else:
        assert failure in status.failure


async def test_poll_decisions(monkeypatch: pytest.MonkeyPatch):
    async def no_details(ref, handle, status):
        return f"failed: {status.failure}"

    monkeypatch.setattr(_pods, "failure_message", no_details)
    handle = {"namespace": "n", "pod": "p", "uid": "u1"}
    running = _kube.summarize(pod("Running", running=True))
    assert await _pods.poll(None, handle, running, launching=True) is None
    assert await _pods.poll(None, handle, None, launching=False) == 0  # gone
    replaced = _kube.summarize(pod("Running", running=True, uid="u2"))
    assert await _pods.poll(None, handle, replaced, launching=False) == 0  # another pod of the same name
    with pytest.raises(LaunchError, match="ErrImagePull"):
        await _pods.poll(None, handle, _kube.summarize(pod(waiting=("ErrImagePull", "x"))), launching=True)
    with pytest.raises(LaunchError, match="disappeared"):
        await _pods.poll(None, handle, None, launching=True)
    exited = _kube.summarize(pod("Failed", terminated=(2, "Error")))
    assert await _pods.poll(None, handle, exited, launching=False) == 2


def test_watch_scope_follows_the_namespace_mode():
    shared = K8sOptions.from_config("k8s", {"namespace": "kernels"})
    assert _status.watch_scope(shared) == "kernels"
    assert _status.watch_scope(K8sOptions.from_config("k8s", {"shared_namespace": False})) == ""
    # allow_kernel_namespace is a server policy: set here as the server would (policy=False)
    byo = K8sOptions.from_config("k8s", {"allow_kernel_namespace": True}, policy=False)
    assert _status.watch_scope(byo) == ""


@pytest.mark.k8s
async def test_one_watch_serves_every_kernel_without_a_request_per_poll(kernels):
    name = kernels.spec()
    managers = [kernels.manager(name) for _ in range(3)]
    await asyncio.gather(*(kernels.start(km) for km in managers))
    source = _status.source_for(managers[0].provisioner.options)
    for _ in range(20):
        if source.watching:
            break
        await asyncio.sleep(0.1)
    assert source.watching
    before = source.fetches
    for _ in range(6):
        assert all(await asyncio.gather(*(km.is_alive() for km in managers)))
        await asyncio.sleep(0.5)
    assert source.fetches == before  # 18 polls of 3 kernels, no list call: all served from the watch
    await asyncio.gather(*(km.shutdown_kernel() for km in managers))
    assert not any(await asyncio.gather(*(km.is_alive() for km in managers)))
