"""gp-k8s's restricting options are security policies: kernel.json may tighten them, never loosen them."""

from __future__ import annotations

import pytest

from gp_core import InvalidOptionError, get_backend


def options(monkeypatch: pytest.MonkeyPatch, **kernel_json):
    for name in ("GP_ALLOWED_IMAGES", "GP_ALLOWED_KERNEL_NAMESPACES", "GP_ALLOW_KERNEL_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    return get_backend("k8s").make_options({"image": "gp/kernel-py:test", **kernel_json})


@pytest.mark.parametrize(
    "loosening",
    [
        {"allowed_images": ["*"]},  # the server lets no request choose the image
        {"allowed_kinds": ["Pod", "Secret"]},
        {"allowed_volume_types": ["hostPath"]},
        {"allow_host_path": True},
        {"allow_kernel_namespace": True},
        {"mount_service_account_token": True},
        {"run_as_non_root": False},
    ],
)
def test_kernel_json_cannot_loosen_the_servers_policy(monkeypatch, loosening):
    (name,) = loosening
    with pytest.raises(InvalidOptionError, match=rf"{name}.*security policy"):
        options(monkeypatch, **loosening)


def test_kernel_json_may_tighten_the_servers_policy(monkeypatch):
    monkeypatch.setenv("GP_ALLOWED_IMAGES", "gp/*")
    tightened = get_backend("k8s").make_options(
        {
            "image": "gp/kernel-py:test",
            "allowed_images": ["gp/kernel-*"],
            "allowed_volume_types": ["emptyDir"],
        }
    )
    assert tightened.allowed_images == ["gp/kernel-*"]
    assert tightened.allowed_volume_types == ["emptyDir"]
    with pytest.raises(InvalidOptionError, match="allowed_images"):
        get_backend("k8s").make_options({"image": "gp/kernel-py:test", "allowed_images": ["other/*"]})
