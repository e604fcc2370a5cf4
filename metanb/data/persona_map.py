"""PAML's persona maps: which persona belongs to which K-means cluster, read without trust.

PAML (``HLTCHKUST/PAML``, ``data/ConvAI2/{train,valid}_persona_map``) publishes each map as a
pickled ``{numpy.int32 cluster id: [persona, ...]}``, a persona being the *sorted* list of its
sentences as PAML's reader cuts them (see :func:`paml_persona`). Unpickling runs whatever
callables the file names, so :func:`read_persona_map` uses an allow-list unpickler: dicts,
lists and strings are pickle opcodes, and the only callables it hands out rebuild numpy
*integer* scalars (``numpy.dtype``, ``numpy[._]core.multiarray.scalar``, and the latin-1
``_codecs.encode`` that protocol-2 pickles use for the scalar's bytes). Anything else is refused
in one line before it is called. The same map can be kept as JSON
(``{"cluster id": [[sentence, ...], ...]}``), which :func:`write_persona_map_json` writes.
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from metanb.errors import MetanbError
from metanb.io import atomic_write_text

Persona = tuple[str, ...]
PersonaMap = dict[int, list[Persona]]

_MAX_BYTES = 256 * 1024 * 1024  # the real maps are a few MB; refuse to slurp anything huge


def paml_sentence(sentence: str) -> str:
    """A persona sentence as PAML's (and the paper's) reader keeps it.

    That reader takes the text between the first and second ``:`` of the line
    ``your persona: <sentence>`` and drops its first and last character (the space and the
    final period), so a sentence with a colon of its own keeps only what precedes it. The maps
    were built by that reader, so a dialogue must be keyed the same way to be found.
    """
    return sentence.split(":", 1)[0][:-1]


def paml_persona(sentences: Iterable[str]) -> Persona:
    """A dialogue's key in a persona map: its PAML-cut sentences, sorted."""
    return tuple(sorted(paml_sentence(s) for s in sentences))


def _int_dtype(name: Any, align: Any = False, copy: Any = True) -> Any:
    import numpy as np

    if not isinstance(name, str):
        raise MetanbError(f"a persona map may only build integer dtypes, not {name!r:.40}")
    dtype = np.dtype(name)
    if dtype.kind not in "iu":
        raise MetanbError(f"a persona map may only build integer dtypes, not {dtype}")
    return dtype


def _int_scalar(dtype: Any, data: Any = None) -> Any:
    import numpy as np

    if not (isinstance(dtype, np.dtype) and dtype.kind in "iu" and isinstance(data, bytes)):
        raise MetanbError("a persona map may only build integer scalars from bytes")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _latin1(text: Any, encoding: Any = "utf-8") -> bytes:
    if not (isinstance(text, str) and encoding == "latin1"):
        raise MetanbError("a persona map may only use _codecs.encode(text, 'latin1')")
    return text.encode("latin1")


_ALLOWED = {
    ("numpy", "dtype"): _int_dtype,
    ("numpy.core.multiarray", "scalar"): _int_scalar,
    ("numpy._core.multiarray", "scalar"): _int_scalar,
    ("_codecs", "encode"): _latin1,
}


class _PersonaMapUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :data:`_ALLOWED` names (to safe stand-ins)."""

    def __init__(self, file: io.BytesIO, source: str) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise MetanbError(
                f"refusing {self.source}: it asks to call {module}.{name}, which a persona map "
                "never needs (only dicts, lists, strings and numpy integer keys are allowed); "
                "nothing in it was run"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise MetanbError(f"refusing {self.source}: it holds persistent ids, not a persona map")


def read_persona_map(path: str | Path) -> PersonaMap:
    """A persona map from PAML's pickle or from its JSON form (chosen by the first byte)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > _MAX_BYTES:
            raise MetanbError(f"{path} is {size} bytes, too large to be a persona map")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise MetanbError(
            f"no such persona map: {path}; download PAML's train_persona_map / "
            "valid_persona_map or give its JSON form"
        ) from None
    except OSError as exc:
        raise MetanbError(f"cannot read persona map {path}: {exc.strerror or exc}") from None
    if raw.lstrip()[:1] == b"{":
        return _from_json(raw, str(path))
    try:
        value = _PersonaMapUnpickler(io.BytesIO(raw), str(path)).load()
    except MetanbError as exc:
        if str(exc).startswith("refusing"):
            raise
        raise MetanbError(f"refusing {path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0][:120]
        raise MetanbError(
            f"{path} is neither a persona-map pickle nor its JSON form ({first})"
        ) from None
    return validate_persona_map(value, str(path))


def _from_json(raw: bytes, source: str) -> PersonaMap:
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MetanbError(f"{source}: not valid JSON ({str(exc)[:120]})") from None
    return validate_persona_map(value, source)


def validate_persona_map(value: Any, source: str = "persona map") -> PersonaMap:
    """Check the shape ``{int: [[str, ...], ...]}`` and normalise it (int keys, tuples)."""
    if not isinstance(value, Mapping):
        raise MetanbError(
            f"{source}: expected a mapping of cluster id -> list of personas, "
            f"got {type(value).__name__}"
        )
    result: PersonaMap = {}
    for key, personas in value.items():
        cluster = _cluster_id(key)
        if cluster is None:
            raise MetanbError(f"{source}: cluster id {key!r:.40} is not an integer")
        if cluster in result:
            raise MetanbError(f"{source}: cluster id {cluster} appears twice")
        if not isinstance(personas, Sequence) or isinstance(personas, (str, bytes)):
            raise MetanbError(f"{source}: cluster {cluster}: expected a list of personas")
        cleaned: list[Persona] = []
        for persona in personas:
            if (
                isinstance(persona, (str, bytes))
                or not isinstance(persona, Sequence)
                or not all(isinstance(s, str) for s in persona)
            ):
                raise MetanbError(
                    f"{source}: cluster {cluster}: expected each persona to be a list of "
                    f"sentences, got {persona!r:.60}"
                )
            cleaned.append(tuple(persona))
        result[cluster] = cleaned
    return result


def _cluster_id(key: Any) -> int | None:
    """An int from a numpy/python integer key or a JSON string key; None when it is neither."""
    import numbers

    if isinstance(key, bool):
        return None
    if isinstance(key, numbers.Integral):
        return int(key)
    if isinstance(key, str) and key.lstrip("-").isdigit():
        return int(key)
    return None


def persona_index(persona_map: Mapping[int, Sequence[Persona]]) -> dict[Persona, int]:
    """Persona -> cluster id; a persona listed in several clusters goes to the last one.

    "Last wins" is how the paper's (and PAML's) loop assigns clusters: it scans the whole map
    and keeps the last cluster whose list contains the persona.
    """
    index: dict[Persona, int] = {}
    for cluster, personas in persona_map.items():
        for persona in personas:
            index[tuple(persona)] = int(cluster)
    return index


def write_persona_map_json(persona_map: Mapping[int, Sequence[Persona]], path: str | Path) -> Path:
    """Write the JSON form of a map (cluster ids as strings, in the map's order), atomically."""
    data = {str(int(k)): [list(p) for p in v] for k, v in persona_map.items()}
    return atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=1) + "\n")
