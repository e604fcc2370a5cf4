"""ConvAI2 / Persona-Chat as meta-learning tasks: one persona is one task.

Data flows one way: a reader (:func:`read_parlai` for ParlAI text files,
:func:`load_hf_persona_chat` for the Hugging Face form, :func:`generate_persona_chat` offline)
gives :class:`Dialogue` objects; :func:`group_by_persona` makes :class:`PersonaTask` objects;
:func:`split_tasks` and :func:`split_support_query` choose retraining personas, new personas and
their support/query examples; :func:`encode_multiple_choice` and :func:`make_batches` turn
examples into the batches a multiple-choice model trains on.
"""

from metanb.data.generator import (
    SAMPLE_ARGS,
    attribute_values,
    generate_persona_chat,
    persona_attributes,
    sample_path,
)
from metanb.data.hf import dialogues_from_records, load_hf_persona_chat, read_hf_json
from metanb.data.multiple_choice import encode_multiple_choice, make_batches
from metanb.data.parlai import iter_parlai, read_parlai, write_parlai
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
    "SAMPLE_ARGS",
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
