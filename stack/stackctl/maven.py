"""Fetching Java artefacts with Maven into the stack cache's own local repository."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from .procs import run_logged
from .settings import Settings

_POM = """<project>
  <modelVersion>4.0.0</modelVersion>
  <groupId>stack.local</groupId>
  <artifactId>{artifact}-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{deps}
  </dependencies>
</project>
"""


def _mvn() -> list[str]:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError("Maven (mvn) is not on PATH; install it (Debian: apt-get install -y maven)")
    return [mvn, "-B", "-q", "-Dstyle.color=never"]


def copy_dependencies(s: Settings, name: str, coords: list[str], out: Path,
                      exclude: Sequence[str] = ()) -> None:
    """Resolve ``coords`` (group:artifact:version) with their runtime closure into ``out``.

    ``exclude`` (group:artifact) is cut out of every dependency's closure, with what only it
    brings. A stamp next to ``out`` names the coordinates (and exclusions, as ``!g:a``) it holds;
    when they change, the missing jars are added in place (never removed: a running JVM may still
    be reading them), so a closure that must lose jars needs a directory of its own.
    """
    stamp = out.with_name(out.name + ".coords")
    wanted = [*coords, *(f"!{x}" for x in exclude)]
    if out.is_dir() and stamp.exists() and stamp.read_text().split() == wanted:
        return
    print(f"{name}: fetching {', '.join(coords)} and the runtime classpath", flush=True)
    work = s.cache / "maven" / name
    work.mkdir(parents=True, exist_ok=True)
    exclusions = "".join(
        f"<exclusion><groupId>{g}</groupId><artifactId>{a}</artifactId></exclusion>"
        for g, a in (x.split(":") for x in exclude)
    )
    deps = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version>" + (f"<exclusions>{exclusions}</exclusions>" if exclusions else "")
        + "</dependency>"
        for g, a, v in (c.split(":") for c in coords)
    )
    (work / "pom.xml").write_text(_POM.format(artifact=name, deps=deps))
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    run_logged([*_mvn(), f"-Dmaven.repo.local={s.cache / 'm2'}", "dependency:copy-dependencies",
                "-DincludeScope=runtime", f"-DoutputDirectory={tmp}"],
               s.log_dir / f"install-{name}.log", f"fetching {name} jars with Maven", cwd=work)
    out.mkdir(parents=True, exist_ok=True)
    for jar in tmp.iterdir():
        if not (out / jar.name).exists():
            jar.rename(out / jar.name)
    shutil.rmtree(tmp)
    stamp.write_text("\n".join(wanted) + "\n")


def copy_artifact(s: Settings, name: str, artifact: str, out: Path) -> Path:
    """Fetch one artefact (group:artifact:version:packaging) into directory ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    run_logged([*_mvn(), f"-Dmaven.repo.local={s.cache / 'm2'}",
                "dependency:copy", f"-Dartifact={artifact}", f"-DoutputDirectory={out}"],
               s.log_dir / f"install-{name}.log", f"fetching {artifact} with Maven", cwd=out)
    _, art, version, packaging = artifact.split(":")
    return out / f"{art}-{version}.{packaging}"
