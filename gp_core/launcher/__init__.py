"""The kernel-side launchers, shipped as plain scripts (package data) to be copied where kernels run."""

from __future__ import annotations

from pathlib import Path

#: ``launch_ipykernel.py``: run it as ``python launch_ipykernel.py --kernel-id ... --response-address ...``.
LAUNCHER_PATH: Path = Path(__file__).with_name("launch_ipykernel.py")

#: The R launcher: ``python launch_irkernel.py <flags>`` speaks gp's protocol and execs ``Rscript
#: launch_IRkernel.R``; it imports ``launch_ipykernel.py`` from its own directory (or the one above).
R_LAUNCHER_DIR: Path = Path(__file__).with_name("r")
R_LAUNCHER_PATH: Path = R_LAUNCHER_DIR / "launch_irkernel.py"
R_KERNEL_SCRIPT_PATH: Path = R_LAUNCHER_DIR / "launch_IRkernel.R"
#: The Scala launcher: ``python launch_toree.py <flags>`` execs spark-submit with Apache Toree; it imports
#: ``launch_irkernel.py`` and ``launch_ipykernel.py`` from its own directory (or the R one).
SCALA_LAUNCHER_PATH: Path = Path(__file__).with_name("scala") / "launch_toree.py"

#: The launcher's arguments that carry the placeholders core fills at launch time (see docs/protocol.md).
PLACEHOLDER_ARGS: tuple[str, ...] = (
    "--kernel-id",
    "{kernel_id}",
    "--port-range",
    "{port_range}",
    "--response-address",
    "{response_address}",
    "--public-key",
    "{public_key}",
)

#: Variables gp's launcher reads where the kernel runs (it cannot import gp_core, so they are listed here for
#: docs/reference.md; tests/test_reference.py checks the launcher's source names each).
LAUNCHER_ENV: dict[str, str] = {
    "KERNEL_ID": "--kernel-id when not given.",
    "RESPONSE_ADDRESS": "--response-address when not given.",
    "PUBLIC_KEY": "--public-key when not given.",
    "PORT_RANGE": "--port-range when not given (default 0..0).",
    "GP_LAUNCH_TOKEN": "The launch token (--launch-token is only a fallback: argv is visible to ps).",
    "GP_KERNEL_IP": "--ip when not given: the address the kernel binds (default 0.0.0.0; the local backend "
    "sets its kernel_ip).",
    "KERNEL_NAME": "The kernel_name reported in the connection info.",
    "GP_CONNECTION_DIR": "Where the launcher makes its private connection directory (it holds the kernel's "
    "key; default the temp dir); the local and ssh backends give one of theirs and remove it with the kernel.",
    "GP_TRANSPORT_ENCRYPTION": "--transport-encryption when not given: 'curve' generates a CurveZMQ key pair "
    "and encrypts the kernel's ZMQ sockets (default none).",
    "GP_RSCRIPT": "R launcher: the Rscript to run (default Rscript on PATH).",
    "GP_R_BIND_TIMEOUT": "R and Scala launchers: seconds the kernel may take to bind its ports (default 60).",
    "GP_TOREE_JAR": "Scala launcher: Apache Toree's assembly jar (default: the installed toree package's).",
}


def launcher_files(language: str) -> dict[str, Path]:
    """The files a kernel of ``language`` needs where it runs: file name -> source, the entry script first.

    All of them go into one directory (the R launcher imports ``launch_ipykernel.py`` from its own).

    :raises ValueError: gp ships no launcher for ``language``.
    """
    if language == "python":
        return {LAUNCHER_PATH.name: LAUNCHER_PATH}
    if language == "r":
        return {
            R_LAUNCHER_PATH.name: R_LAUNCHER_PATH,
            R_KERNEL_SCRIPT_PATH.name: R_KERNEL_SCRIPT_PATH,
            LAUNCHER_PATH.name: LAUNCHER_PATH,
        }
    if language == "scala":
        return {
            SCALA_LAUNCHER_PATH.name: SCALA_LAUNCHER_PATH,
            R_LAUNCHER_PATH.name: R_LAUNCHER_PATH,
            LAUNCHER_PATH.name: LAUNCHER_PATH,
        }
    raise ValueError(f"gp has no kernel launcher for language {language!r}; supported: python, r, scala")


__all__ = [
    "LAUNCHER_ENV",
    "LAUNCHER_PATH",
    "PLACEHOLDER_ARGS",
    "R_KERNEL_SCRIPT_PATH",
    "R_LAUNCHER_DIR",
    "R_LAUNCHER_PATH",
    "SCALA_LAUNCHER_PATH",
    "launcher_files",
]
