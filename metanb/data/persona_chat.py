"""The paper's data on disk: Persona-Chat's ``*_self_original.txt`` and PAML's persona maps.

A *Persona-Chat folder* is laid out as :func:`download_persona_chat` leaves it::

    train_self_original.txt  valid_self_original.txt  train_persona_map  valid_persona_map

(the maps may also be ``*_persona_map.json``, their JSON form). The text files come out of
ParlAI's ``personachat.tgz`` (Persona-Chat, not ConvAI2: see PAPER_SETUP.md), the maps from
PAML's repository. Every download is pinned by sha256 in :data:`SOURCES`.

PAML's maps: their sha256 could not be learned where this was written (no network; the files
are binary and not published with digests), so their entries are ``None`` and
:func:`~metanb.data.download.fetch` refuses to download them until the digest is filled in
here (or passed as ``sha256={"train_persona_map": "..."}``). Compute it once from a trusted
copy: ``sha256sum train_persona_map``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from metanb.data.download import extract_tar_member, fetch
from metanb.data.parlai import read_parlai, write_parlai
from metanb.data.persona_map import (
    PersonaMap,
    paml_persona,
    read_persona_map,
    write_persona_map_json,
)
from metanb.data.tasks import Dialogue, Dialogues, persona_key
from metanb.errors import MetanbError


@dataclass(frozen=True)
class Source:
    """One published file: where it is, its pinned sha256 (None = not pinned yet)."""

    url: str
    sha256: str | None
    note: str


PAML_RAW = "https://raw.githubusercontent.com/HLTCHKUST/PAML/master/data/ConvAI2/"
SOURCES: dict[str, Source] = {
    "personachat.tgz": Source(
        "http://parl.ai/downloads/personachat/personachat.tgz",
        # the digest ParlAI itself pins (parlai/tasks/personachat/build.py, RESOURCES)
        "507cf8641d333240654798870ea584d854ab5261071c5e3521c20d8fa41d5622",
        "ParlAI's Persona-Chat archive",
    ),
    "train_persona_map": Source(
        PAML_RAW + "train_persona_map",
        None,  # NOT PINNED: fill in the sha256 of PAML's file before downloading it
        "PAML's K-means persona clusters of the train split",
    ),
    "valid_persona_map": Source(
        PAML_RAW + "valid_persona_map",
        None,  # NOT PINNED: fill in the sha256 of PAML's file before downloading it
        "PAML's K-means persona clusters of the valid split",
    ),
}
# where the two dialogue files are inside personachat.tgz
ARCHIVE_MEMBERS = {
    "train_self_original.txt": "personachat/train_self_original.txt",
    "valid_self_original.txt": "personachat/valid_self_original.txt",
}
SPLITS = ("train", "valid")


def download_persona_chat(
    folder: str | Path,
    sha256: Mapping[str, str] | None = None,
    progress: bool = True,
    keep_archive: bool = True,
) -> Path:
    """Fill ``folder`` with the four files of a Persona-Chat folder (cached, verified).

    ``sha256`` overrides (or supplies) pinned digests by file name. The archive is kept so a
    second call needs no network; ``keep_archive=False`` deletes it after extraction. Files
    already in the folder are used as they are (the dialogue files have no published digest
    of their own: they come out of the verified archive, written atomically).
    """
    folder = Path(folder)
    digests = {name: src.sha256 for name, src in SOURCES.items()} | dict(sha256 or {})

    def get(name: str) -> Path:
        digest = digests[name]
        if not digest:
            raise MetanbError(
                f"{name} has no pinned sha256 (metanb/data/persona_chat.py SOURCES), so it is "
                f"not downloaded; pass --sha256 {name}=<digest> (sha256=...) or copy a trusted "
                f"{name} into {folder}"
            )
        return fetch(SOURCES[name].url, folder / name, digest, desc=name, progress=progress)

    missing = [n for n in ARCHIVE_MEMBERS if not (folder / n).is_file()]
    if missing:
        archive = get("personachat.tgz")
        for name in missing:
            extract_tar_member(archive, ARCHIVE_MEMBERS[name], folder / name)
        if not keep_archive:
            archive.unlink()
    for split in SPLITS:
        if _map_path(folder, split) is None:
            get(f"{split}_persona_map")
    return folder


def _map_path(folder: Path, split: str) -> Path | None:
    for name in (f"{split}_persona_map", f"{split}_persona_map.json"):
        if (folder / name).is_file():
            return folder / name
    return None


@dataclass
class PersonaChatFolder:
    """The dialogues and persona maps of both splits of a Persona-Chat folder."""

    train: Dialogues
    valid: Dialogues
    train_map: PersonaMap
    valid_map: PersonaMap


def check_persona_chat_folder(folder: Path) -> None:
    """Refuse, naming what is missing, a folder that is not a whole Persona-Chat folder."""
    if not folder.is_dir():
        raise MetanbError(f"{folder} is not a folder; a Persona-Chat folder holds {_layout()}")
    missing = [n for n in ARCHIVE_MEMBERS if not (folder / n).is_file()]
    missing += [f"{s}_persona_map" for s in SPLITS if _map_path(folder, s) is None]
    if missing:
        raise MetanbError(
            f"{folder} lacks {', '.join(missing)}; a Persona-Chat folder holds {_layout()} "
            "(python -m metanb data download --out FOLDER fetches them)"
        )


def load_persona_chat_folder(path: str | Path, skip_bad: bool = False) -> PersonaChatFolder:
    """Read a Persona-Chat folder (see the module docstring); missing files are named."""
    folder = Path(path)
    check_persona_chat_folder(folder)
    maps = {s: read_persona_map(_map_path(folder, s)) for s in SPLITS}  # type: ignore[arg-type]
    return PersonaChatFolder(
        train=read_parlai(folder / "train_self_original.txt", skip_bad=skip_bad),
        valid=read_parlai(folder / "valid_self_original.txt", skip_bad=skip_bad),
        train_map=maps["train"],
        valid_map=maps["valid"],
    )


def _layout() -> str:
    return ", ".join([*ARCHIVE_MEMBERS, *(f"{s}_persona_map" for s in SPLITS)])


def write_offline_persona_chat(
    folder: str | Path,
    train_clusters: int = 4,
    valid_clusters: int = 3,
    personas_per_cluster: int = 2,
    dialogues_per_persona: int = 3,
    turns: int = 3,
    candidates: int = 20,
    seed: int = 0,
) -> Path:
    """Write an offline Persona-Chat folder (generated dialogues, JSON persona maps).

    The same layout as the download, so the paper's code path runs without the real data
    (e.g. in CI): disjoint generated personas, ``personas_per_cluster`` per cluster, cluster
    ids counted from 1 (the paper deletes cluster 0).
    """
    from metanb.data.generator import generate_persona_chat

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n_train = train_clusters * personas_per_cluster
    total = n_train + valid_clusters * personas_per_cluster
    dialogues = generate_persona_chat(
        personas=total, dialogues_per_persona=dialogues_per_persona,
        candidates=candidates, seed=seed, turns=turns,
    )
    by_persona: dict[str, list[Dialogue]] = {}
    for dialogue in dialogues:
        by_persona.setdefault(persona_key(dialogue.persona), []).append(dialogue)
    groups = list(by_persona.values())
    for split, part in (("train", groups[:n_train]), ("valid", groups[n_train:])):
        write_parlai([d for group in part for d in group], folder / f"{split}_self_original.txt")
        clusters: PersonaMap = {}
        for i, group in enumerate(part):
            clusters.setdefault(1 + i // personas_per_cluster, []).append(
                paml_persona(group[0].persona)
            )
        write_persona_map_json(clusters, folder / f"{split}_persona_map.json")
    return folder
