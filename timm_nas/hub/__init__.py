"""Export a model to a Hub-ready folder, push it, and load it back.

Three verbs, as in ``huggingface_hub``:

* :func:`export` writes ``config.json`` (through timm's own writer: ``architecture``, ``model_args`` with the
  architecture config under its argument name, ``pretrained_cfg``, ``num_classes``, plus a ``timm_nas`` marker
  block), ``model.safetensors`` and a ``README.md`` model card rendered from ``hub_cards/<family>.md``
  (:func:`render_card`). The folder appears atomically: it is written beside the destination and renamed into
  place.
* :func:`push` uploads such a folder with ``huggingface_hub`` (``create_repo(exist_ok=True)`` then
  ``upload_folder``).
* :func:`load` rebuilds the model with ``timm.create_model('local-dir:...' | 'hf-hub:...')`` after importing
  timm-nas, turning timm's terse failures into errors that say what to do.

:func:`convert_checkpoint` turns an authors' released checkpoint into such a folder through the family's
``checkpoint_filter_fn``; the families it knows are the declarations of :mod:`timm_nas.family`.

The exporter never guesses constructor arguments: the architecture must be recorded in ``model._model_args``
(``timm.create_model`` does it; a model made another way, such as ``extract()``'s, calls
:func:`record_model_args`), and before anything is written the recorded arguments are checked to rebuild a model
with exactly the exported weights' names and shapes.

Modules: :mod:`.export`, :mod:`.card`, :mod:`.load`, :mod:`.push`, :mod:`.convert`; the family table is in
``_family`` and the shared helpers in ``_common``.
"""
from ._common import MARKER_KEY, REPO_ID_PLACEHOLDER, WEIGHTS_NAME, record_model_args, state_dict_mismatch
from ._family import FAMILIES, HubFamily, family_of
from .card import CARD_KEYS, render_card
from .convert import convert_checkpoint
from .export import export
from .load import load, read_config
from .push import push

__all__ = [
    "export",
    "push",
    "load",
    "read_config",
    "render_card",
    "convert_checkpoint",
    "record_model_args",
    "state_dict_mismatch",
    "HubFamily",
    "FAMILIES",
    "family_of",
    "CARD_KEYS",
    "MARKER_KEY",
    "REPO_ID_PLACEHOLDER",
    "WEIGHTS_NAME",
]
