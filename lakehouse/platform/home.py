"""The state folder remembers where it was created, to stop at once when it has been moved.

Stream checkpoints record the absolute paths of the landing files they have read, and the MLflow
store the absolute locations of its artifacts. In a folder moved elsewhere every landing file
would look new (and be ingested again) and every model's artifacts missing, so a command that
finds the folder at another path than the one recorded stops with a message saying what to do.
"""

from __future__ import annotations

import json
from pathlib import Path

#: The marker file, at the top of the state folder.
MARKER = ".lakehouse-home.json"
#: Exit status of a command that found its state folder moved: ``EX_CONFIG`` of sysexits.h.
EXIT_MOVED = 78


class HomeMoved(RuntimeError):
    """The state folder was created at another path. ``exit_code`` is :data:`EXIT_MOVED`."""

    exit_code = EXIT_MOVED

    def __init__(self, home: Path, recorded: Path) -> None:
        super().__init__(
            f"the state folder {home} was created at {recorded} and has been moved: its stream "
            f"checkpoints (and the MLflow store) hold absolute paths under {recorded}, so runs "
            f"here would ingest every landing file again. Move it back to {recorded} (and set "
            f"LAKEHOUSE_HOME={recorded}); or, to rebuild it here from its landing files, delete "
            f"{home / 'checkpoints'} and {home / 'tables'}"
        )
        self.home = home
        self.recorded = recorded


def check_home(home: Path) -> None:
    """Record ``home``'s path on first use; raise :class:`HomeMoved` if it was recorded elsewhere.

    A folder that holds no checkpoint (nothing recorded an absolute path, or the checkpoints
    were deleted to rebuild) is marked with its new path, not refused.
    """
    home = Path(home)
    marker = home / MARKER
    here = home.resolve()
    try:
        recorded = Path(json.loads(marker.read_text())["path"])
    except FileNotFoundError:
        recorded = None
    except (ValueError, KeyError, TypeError, OSError):
        recorded = None  # unreadable: written again below
    if recorded == here:
        return
    checkpoints = home / "checkpoints"
    if recorded is not None and checkpoints.is_dir() and any(checkpoints.iterdir()):
        raise HomeMoved(here, recorded)
    home.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"path": str(here)}) + "\n")
