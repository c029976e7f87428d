"""Upload an exported folder to a Hub model repository with ``huggingface_hub`` (``create_repo(exist_ok=True)``
then ``upload_folder``), pointing the card's example at the repo and keeping the token out of every message."""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from ..version import __version__
from ._common import README_NAME, atomic_write_text
from .load import read_config

__all__ = ["push"]

_logger = logging.getLogger(__name__)

# The example line the card writes (timm_nas.hub.card._usage_section); push points it at the repo (the
# placeholder or an earlier repo).
_USAGE_LINE = re.compile(r'(timm\.create_model\("hf-hub:)([^"]+)(", pretrained=True\))')


def _filled_card(readme: Path, repo_id: str) -> str | None:
    """The card's text with its example pointed at ``repo_id`` (``None`` without a card)."""
    if not readme.is_file():
        _logger.warning("%s has no %s: the repo will have no model card", readme.parent, README_NAME)
        return None
    text = readme.read_text(encoding="utf-8")
    return _USAGE_LINE.sub(lambda m: m.group(1) + repo_id + m.group(3), text)


def _store_card(readme: Path, text: str) -> None:
    """After a successful push: keep the local card equal to the pushed one."""
    try:
        if readme.read_text(encoding="utf-8") != text:
            atomic_write_text(readme, text)
    except OSError as e:
        _logger.warning("could not write the repo id into %s (%s); the card's example keeps its old repo id",
                        readme, e)


def _scrub(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


def _leaks(e: BaseException, token: str) -> bool:
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if token in str(cur) or token in repr(cur.args):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def push(folder: str | os.PathLike, repo_id: str, *, private: bool = False, token: str | None = None,
         commit_message: str | None = None) -> str:
    """Upload an exported folder to a Hub model repository (created if needed).

    The card's example loads ``hf-hub:<repo>``; the uploaded card has that line pointed at ``repo_id`` (replacing
    :data:`~timm_nas.hub.REPO_ID_PLACEHOLDER` or the repo of an earlier push), and the local ``README.md`` is
    updated the same way once the upload succeeded (a failed push changes nothing locally).

    Args:
        folder: a folder written by :func:`~timm_nas.hub.export` (checked first: its ``config.json`` must be
            valid).
        repo_id: ``'namespace/name'``.
        private: create the repository private (an existing repository keeps its visibility).
        token: a Hub token; ``None`` uses ``huggingface_hub``'s usual resolution (``HF_TOKEN``, ``hf auth login``).
            It (or the token ``huggingface_hub`` resolves) is never logged, written or shown in errors.
        commit_message: the commit's message (default: "Upload <architecture> with timm-nas <version>").

    Returns:
        The repository's URL.

    Raises:
        FileNotFoundError / ValueError: the folder is not a valid export.
        RuntimeError: the Hub refused or could not be reached (the message has any token masked).
    """
    from huggingface_hub import CommitOperationAdd, HfApi, get_token

    folder = Path(folder)
    if not isinstance(repo_id, str) or not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        raise ValueError(f"repo_id must look like 'namespace/name', got {repo_id!r}")
    cfg = read_config(folder)
    if not any(folder.glob("*.safetensors")):
        _logger.warning("%s holds no weights: pushing the architecture only", folder)
    card = _filled_card(folder / README_NAME, repo_id)
    message = commit_message or f"Upload {cfg['architecture']} with timm-nas {__version__}"
    # One commit of the folder's files, the card as pushed (the local folder is changed only after success).
    operations = [CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(),
                                     path_or_fileobj=card.encode("utf-8") if p.name == README_NAME and p.parent == folder
                                     and card is not None else str(p))
                  for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")]
    try:
        api = HfApi(token=token)
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.create_commit(repo_id=repo_id, repo_type="model", operations=operations, commit_message=message)
    except Exception as e:
        secret = token or get_token()
        text = _scrub(f"{type(e).__name__}: {e}", secret)
        error = RuntimeError(f"push of {folder} to {repo_id} failed: {text}")
        if secret and _leaks(e, secret):
            raise error from None  # the original exception (and its chain) would show the token
        raise error from e
    if card is not None:
        _store_card(folder / README_NAME, card)
    _logger.info("pushed %s to %s", folder, url)
    return str(url)

