"""Persona maps: PAML's pickle read through an allow-list (hostile ones refused), JSON form."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from metanb.cli import main
from metanb.data.persona_map import (
    paml_persona,
    paml_sentence,
    persona_index,
    read_persona_map,
    write_persona_map_json,
)
from metanb.errors import MetanbError

MAP = {
    np.int32(3): [["i like cats", "i live in ohio"], ["i am tall", "i like dogs"]],
    np.int32(0): [["i hate mondays"]],
    np.int32(41): [["i am tall", "i like dogs"]],  # listed twice: the last cluster wins
}
EXPECTED = {
    3: [("i like cats", "i live in ohio"), ("i am tall", "i like dogs")],
    0: [("i hate mondays",)],
    41: [("i am tall", "i like dogs")],
}


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_int32_keys_load_in_every_protocol(tmp_path: Path, protocol: int) -> None:
    path = tmp_path / "train_persona_map"
    path.write_bytes(pickle.dumps(MAP, protocol=protocol))
    loaded = read_persona_map(path)
    assert loaded == EXPECTED
    assert all(type(k) is int for k in loaded)
    assert list(loaded) == [3, 0, 41]  # the map's order is kept (it decides "last wins")


def test_numpy_1_module_name_is_accepted(tmp_path: Path) -> None:
    """Maps pickled under numpy 1 name ``numpy.core.multiarray.scalar``."""
    raw = pickle.dumps(MAP, protocol=3)
    assert b"numpy._core.multiarray" in raw
    old = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path = tmp_path / "m"
    path.write_bytes(old)
    assert read_persona_map(path) == EXPECTED


class _Hostile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "train_persona_map"
    path.write_bytes(pickle.dumps({np.int32(1): [["a"]], "x": _Hostile(marker)}, protocol=2))
    # the payload is real: plain pickle.loads would run it
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Hostile(probe)))
    assert probe.exists()
    with pytest.raises(MetanbError) as e:
        read_persona_map(path)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"refusing {path}: it asks to call ")
    assert ".system" in msg and "nothing in it was run" in msg
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps({1: [["a"]], 2: np.float64(1.5)}, protocol=3),  # numpy, but not an int
        pickle.dumps({1: [["a"]], 2: np.arange(3)}, protocol=3),  # an array: needs _reconstruct
        pickle.dumps({1: [["a"]], 2: {1, 2}}, protocol=3),  # builtins.set
        pickle.dumps({1: Path("/etc")}, protocol=3),
    ],
)
def test_everything_but_integer_scalars_is_refused(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "m"
    path.write_bytes(payload)
    with pytest.raises(MetanbError, match=rf"^refusing {path}: "):
        read_persona_map(path)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ([["a"]], "expected a mapping of cluster id -> list of personas, got list"),
        ({"x": [["a"]]}, "cluster id 'x' is not an integer"),
        ({1: "abc"}, "cluster 1: expected a list of personas"),
        ({1: ["abc"]}, "cluster 1: expected each persona to be a list of sentences"),
        ({1: [["a", 2]]}, "cluster 1: expected each persona to be a list of sentences"),
    ],
)
def test_wrong_shapes_are_one_line(tmp_path: Path, value: object, fragment: str) -> None:
    path = tmp_path / "m"
    path.write_bytes(pickle.dumps(value, protocol=4))
    with pytest.raises(MetanbError, match=f"^{path}: ") as e:
        read_persona_map(path)
    assert fragment in str(e.value)


def test_garbage_and_missing(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(MetanbError, match=r"is neither a persona-map pickle nor its JSON form"):
        read_persona_map(bad)
    with pytest.raises(MetanbError, match=r"^no such persona map: "):
        read_persona_map(tmp_path / "nope")
    broken = tmp_path / "b.json"
    broken.write_text('{"1": [["a"]')
    with pytest.raises(MetanbError, match=r"b\.json: not valid JSON"):
        read_persona_map(broken)


def test_json_round_trip_and_convert_map_cli(tmp_path: Path, capsys) -> None:
    src = tmp_path / "valid_persona_map"
    src.write_bytes(pickle.dumps(MAP, protocol=3))
    out = tmp_path / "valid_persona_map.json"
    assert main(["data", "convert-map", str(src), "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}: 3 clusters, 4 personas\n"
    data = json.loads(out.read_text())
    assert list(data) == ["3", "0", "41"]
    assert data["3"] == [["i like cats", "i live in ohio"], ["i am tall", "i like dogs"]]
    assert read_persona_map(out) == EXPECTED
    write_persona_map_json(read_persona_map(out), tmp_path / "again.json")
    assert (tmp_path / "again.json").read_text() == out.read_text()


def test_convert_map_refuses_a_hostile_file_in_one_line(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "pwned"
    src = tmp_path / "m"
    src.write_bytes(pickle.dumps(_Hostile(marker)))
    assert main(["data", "convert-map", str(src), "--out", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "refusing" in err
    assert not marker.exists() and not (tmp_path / "o.json").exists()


def test_paml_sentence_cuts_as_the_papers_reader() -> None:
    assert paml_sentence("i like cats.") == "i like cats"
    # the reader keeps the text before a second colon, minus its last character
    assert paml_sentence("my favorite band is: queen.") == "my favorite band i"
    assert paml_persona(["i live in ohio.", "i like cats."]) == ("i like cats", "i live in ohio")
    assert persona_index(EXPECTED)[("i am tall", "i like dogs")] == 41
