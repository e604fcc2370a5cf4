"""What every experiment's config offers the runner, for any nested dataclass of settings.

The runner, the CLI and the results reader handle a config only through these methods
(``from_dict``/``load``, ``to_dict``/``to_yaml``, dotted-key ``override``, ``fingerprint``,
``validate``), and read only its grid axes (``seeds``, ``retrain.methods``, ``retrain.ranks``,
``finetune.ranks``, ``finetune.head``). An experiment's config subclasses :class:`Settings`
and adds its sections and its ``validate``.

The mixin lives in :mod:`metanb.experiments.config`, beside the one parser and coercion it
uses (convai2's :class:`~metanb.experiments.config.ExperimentConfig` is built on it too); this
module is its public name for other experiments. Its methods use ``type(self)`` as the root
class, so an unknown key is answered with that experiment's own keys.
"""

from __future__ import annotations

from metanb.experiments.config import GRID_KEYS, Settings, setting_keys

__all__ = ["GRID_KEYS", "Settings", "setting_keys"]
