"""gp_core.spark.submit_args_for_request: a Spark kernel's spark-submit options for one start request."""

from __future__ import annotations

import shlex

import pytest

from gp_core.errors import InvalidOptionError
from gp_core.spark import submit_args_for_request

SPEC = {"PYSPARK_SUBMIT_ARGS": "--master yarn --deploy-mode client pyspark-shell", "KERNEL_USERNAME": "alice"}


def args(env: dict[str, str]) -> list[str]:
    return shlex.split(env["PYSPARK_SUBMIT_ARGS"])


def test_the_application_is_named_after_the_kernel_and_request_options_are_added():
    env = submit_args_for_request(SPEC, {"KERNEL_EXTRA_SPARK_OPTS": "--conf 'spark.x=a b'"}, "k-1")
    assert args(env) == [
        "--master",
        "yarn",
        "--deploy-mode",
        "client",
        "--name",
        "k-1",
        "--conf",
        "spark.x=a b",
        "pyspark-shell",
    ]


def test_a_name_in_the_spec_is_kept():
    spec = {**SPEC, "PYSPARK_SUBMIT_ARGS": "--name mine pyspark-shell"}
    assert args(submit_args_for_request(spec, {}, "k-1")) == ["--name", "mine", "pyspark-shell"]


def test_impersonation_adds_the_requesting_user():
    env = submit_args_for_request(SPEC, {}, "k-1", impersonate=True)
    assert args(env)[-3:] == ["--proxy-user", "alice", "pyspark-shell"]
    with pytest.raises(InvalidOptionError, match="cannot be impersonated"):
        submit_args_for_request({**SPEC, "KERNEL_USERNAME": "-x; rm"}, {}, "k-1", impersonate=True)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("--conf 'unbalanced", "cannot be split"),
        ("not-an-option", "must be spark-submit options"),
        ("--proxy-user root", "may not set --proxy-user"),
    ],
)
def test_bad_request_options_are_refused(extra, message):
    with pytest.raises(InvalidOptionError, match=message):
        submit_args_for_request(SPEC, {"KERNEL_EXTRA_SPARK_OPTS": extra}, "k-1")


def test_request_options_can_be_turned_off_and_non_spark_kernels_are_left_alone():
    with pytest.raises(InvalidOptionError, match="not allowed"):
        submit_args_for_request(
            SPEC, {"KERNEL_EXTRA_SPARK_OPTS": "--conf a=b"}, "k", allow_request_opts=False
        )
    plain = {"KERNEL_USERNAME": "alice"}
    assert submit_args_for_request(plain, {"KERNEL_EXTRA_SPARK_OPTS": "--conf a=b"}, "k") is plain
