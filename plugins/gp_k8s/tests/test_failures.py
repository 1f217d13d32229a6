"""A kernel that cannot start fails its launch at once, with the reason Kubernetes gives, and leaves nothing."""

from __future__ import annotations

import time

import pytest

from gp_core import BackendError, LaunchError

pytestmark = pytest.mark.k8s

FAST = 10.0  # seconds: far below the 30 s launch timeout, which is what the anchor waits for


async def _fails(kernels, config=None, argv=None, **variables):
    km = kernels.manager(kernels.spec(config=config, argv=argv))
    started = time.monotonic()
    with pytest.raises(BackendError) as failure:
        await kernels.start(km, **variables)
    return failure.value, time.monotonic() - started


async def test_a_missing_image_fails_fast_with_its_reason(kernels):
    error, took = await _fails(kernels, config={"image": "gp/no-such-image:missing"})
    assert isinstance(error, LaunchError)
    assert "ErrImageNeverPull" in str(error) and "gp/no-such-image:missing" in str(error)
    assert took < FAST, took


async def test_a_crashing_kernel_fails_fast_with_its_exit_code_and_log(kernels):
    argv = ["python3", "-c", "import sys; print('kernel says goodbye', flush=True); sys.exit(3)"]
    error, took = await _fails(kernels, argv=argv)
    assert isinstance(error, LaunchError)
    assert "exited with code 3" in str(error)
    assert "kernel says goodbye" in str(error)
    assert took < FAST, took


async def test_an_unschedulable_pod_fails_fast_with_the_schedulers_message(kernels):
    error, took = await _fails(kernels, config={"node_selector": {"gp-test/no-such-label": "x"}})
    assert isinstance(error, LaunchError)
    assert "Unschedulable: 0/1 nodes are available" in str(error) and "didn't match" in str(error)
    assert took < FAST, took


async def test_an_oom_killed_kernel_says_so(kernels):
    argv = ["python3", "-c", "x = bytearray(400 * 2**20); import time; time.sleep(30)"]
    config = {"resources": {"limits": {"memory": "64Mi"}, "requests": {"memory": "64Mi"}}}
    error, took = await _fails(kernels, config=config, argv=argv)
    assert "OOMKilled" in str(error) or "code 137" in str(error)
    assert took < FAST + 10, took


async def test_a_forbidden_request_names_verb_resource_and_namespace(identities, kernels):
    namespace = identities.namespace("gp-forbidden")
    kubeconfig = identities.identity(namespace)  # an identity with no rights at all
    error, took = await _fails(kernels, config={"kubeconfig": kubeconfig, "namespace": namespace})
    message = str(error)
    assert "403 Forbidden" in message and "create" in message and "pods" in message and namespace in message
    assert took < FAST, took
