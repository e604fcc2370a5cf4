"""ConvAI2 / Persona-Chat as meta-learning tasks: one persona is one task.

Data flows one way: a reader (:func:`read_parlai` for ParlAI text files,
:func:`load_hf_persona_chat` for the Hugging Face form, :func:`generate_persona_chat` offline)
gives :class:`Dialogue` objects; :func:`group_by_persona` makes :class:`PersonaTask` objects;
:func:`split_tasks` and :func:`split_support_query` choose retraining personas, new personas and
their support/query examples; :func:`encode_multiple_choice` and :func:`make_batches` turn
examples into the batches a multiple-choice model trains on.

The paper's own setup: :func:`download_persona_chat` / :func:`load_persona_chat_folder` give
Persona-Chat and PAML's persona maps (:func:`read_persona_map`, never trusting the pickle);
:func:`retraining_tasks` and :func:`new_tasks` cut persona *clusters* into
:class:`ClusterTask` objects as the paper does; :func:`encode_cross_encoder`,
:func:`make_cross_encoder_batches` and :func:`hits_at_1` are its cross-encoder format.
"""

from metanb.data.clusters import (
    Clustering,
    ClusterTask,
    cluster_dialogues,
    cluster_summary,
    cluster_tasks,
    new_tasks,
    retraining_tasks,
)
from metanb.data.cross_encoder import encode_cross_encoder, hits_at_1, make_cross_encoder_batches
from metanb.data.download import extract_tar_member, fetch
from metanb.data.generator import (
    SAMPLE_ARGS,
    attribute_values,
    generate_persona_chat,
    persona_attributes,
    sample_path,
)
from metanb.data.hf import HUB_DATASET, dialogues_from_records, load_hf_persona_chat, read_hf_json
from metanb.data.multiple_choice import encode_multiple_choice, make_batches
from metanb.data.parlai import iter_parlai, read_parlai, write_parlai
from metanb.data.persona_chat import (
    PersonaChatFolder,
    download_persona_chat,
    load_persona_chat_folder,
    write_offline_persona_chat,
)
from metanb.data.persona_map import paml_persona, read_persona_map, write_persona_map_json
from metanb.data.tasks import (
    Dialogue,
    Dialogues,
    Example,
    PersonaTask,
    corpus_texts,
    group_by_persona,
    persona_key,
    split_support_query,
    split_tasks,
)

__all__ = [
    "HUB_DATASET",
    "SAMPLE_ARGS",
    "ClusterTask",
    "Clustering",
    "PersonaChatFolder",
    "cluster_dialogues",
    "cluster_summary",
    "cluster_tasks",
    "download_persona_chat",
    "encode_cross_encoder",
    "extract_tar_member",
    "fetch",
    "hits_at_1",
    "load_persona_chat_folder",
    "make_cross_encoder_batches",
    "new_tasks",
    "paml_persona",
    "read_persona_map",
    "retraining_tasks",
    "write_offline_persona_chat",
    "write_persona_map_json",
    "Dialogue",
    "Dialogues",
    "Example",
    "PersonaTask",
    "attribute_values",
    "corpus_texts",
    "dialogues_from_records",
    "encode_multiple_choice",
    "generate_persona_chat",
    "group_by_persona",
    "iter_parlai",
    "load_hf_persona_chat",
    "make_batches",
    "persona_attributes",
    "persona_key",
    "read_hf_json",
    "read_parlai",
    "sample_path",
    "split_support_query",
    "split_tasks",
    "write_parlai",
]
