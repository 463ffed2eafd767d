"""The model registry: bundle versions per repository, ``current`` switched atomically.

Layout: ``<registry>/<owner>__<name>/<version>/`` for bundles, ``current`` a symlink to the one in
service, ``encoder/`` the latest domain-adapted encoder (the next refresh continues from it).
A rejected bundle is kept with a ``REJECTED`` file saying why.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from training.bundle import MANIFEST, Bundle, BundleError
from training.records import is_repository_name

CURRENT = "current"
REJECTED = "REJECTED"
PROMOTED = "PROMOTED"
ENCODER_BASE = "issue_labeler_base_model.json"  # in encoder/: the base model it was adapted from


@dataclass(frozen=True)
class VersionInfo:
    version: str
    path: Path
    status: str  # current | promoted | rejected | candidate
    reason: str | None
    test_micro_f1: float | None


class Registry:
    def __init__(self, root: Path) -> None:
        self.root = root

    def repo_dir(self, repo: str) -> Path:
        if not is_repository_name(repo):
            raise ValueError(f"expected OWNER/NAME, got {repo!r}")
        return self.root / repo.replace("/", "__")

    def rename_repo(self, old: str, new: str) -> bool:
        """Move a renamed repository's bundles and encoder to its new name (one atomic rename);
        nothing happens where the old folder is missing or the new one exists already.

        A refresh writing in the old folder (its ``.work-*`` folder is there) keeps its paths: the
        old name is left as a link to the new folder until that refresh ends (``drop_forward``).
        """
        source, target = self.repo_dir(old), self.repo_dir(new)
        if target.is_symlink():  # left by a rename the other way while a refresh ran
            target.unlink()
        if source.is_symlink() or not source.is_dir() or target.exists():
            return False
        refreshing = any(source.glob(".work-*"))
        os.rename(source, target)
        if refreshing:
            source.symlink_to(target.name, target_is_directory=True)
        return True

    def drop_forward(self, repo: str) -> None:
        """Remove the link a rename left under the repository's old name, if there is one."""
        folder = self.repo_dir(repo)
        if folder.is_symlink():
            folder.unlink()

    def forget_repo(self, repo: str) -> bool:
        """Delete a repository's bundles and adapted encoder (they were trained on its issues)."""
        folder = self.repo_dir(repo)
        if folder.is_symlink():
            folder.unlink()
        elif folder.is_dir():
            shutil.rmtree(folder)
        else:
            return False
        return True

    def remove_work_folders(self, repo: str) -> list[str]:
        """Delete the work folders (adapted encoder, checkpoints) of refreshes that died without
        cleaning up, e.g. killed for memory. Only for the holder of the repository's refresh lock:
        any work folder then is a dead refresh's."""
        folder = self.repo_dir(repo)
        if folder.is_symlink() or not folder.is_dir():
            return []
        stale = sorted(p for p in folder.glob(".work-*") if p.is_dir())
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)
        return [path.name for path in stale]

    def encoder_dir(self, repo: str) -> Path:
        return self.repo_dir(repo) / "encoder"

    def adapted_encoder(self, repo: str, base_model: str) -> tuple[Path | None, str]:
        """The repository's adapted encoder if a refresh of ``base_model`` may continue from it,
        and why (or why not): one adapted from another base model is another architecture or
        vocabulary, so a changed ``base_model`` starts over, as does an encoder that does not
        say what it was adapted from (kept by a version before this was recorded)."""
        folder = self.encoder_dir(repo)
        if not (folder / "config.json").is_file():
            return None, "no adapted encoder yet"
        try:
            recorded = json.loads((folder / ENCODER_BASE).read_text())["base_model"]
        except FileNotFoundError:
            return None, f"the adapted encoder does not record its base model ({ENCODER_BASE})"
        except (ValueError, KeyError, TypeError) as exc:
            return None, f"the adapted encoder's {ENCODER_BASE} is unreadable ({exc!r})"
        if recorded != base_model:
            return None, f"the adapted encoder descends from {recorded}, not {base_model}"
        return folder, "previous adapted encoder"

    def keep_encoder(self, repo: str, encoder: Path, base_model: str) -> None:
        """Make ``encoder`` (moved, not copied) the one the next refresh continues from,
        recording the base model it descends from."""
        (encoder / ENCODER_BASE).write_text(json.dumps({"base_model": base_model}) + "\n")
        target = self.encoder_dir(repo)
        staging = self.repo_dir(repo) / ".encoder.new"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.move(str(encoder), staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)

    def new_version(self, repo: str) -> tuple[str, Path]:
        """A fresh, empty version folder named by the UTC time (sortable)."""
        base = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        version, n = base, 1
        while (self.repo_dir(repo) / version).exists():
            n += 1
            version = f"{base}-{n}"
        path = self.repo_dir(repo) / version
        path.mkdir(parents=True)
        return version, path

    def current_version(self, repo: str) -> str | None:
        link = self.repo_dir(repo) / CURRENT
        return os.readlink(link) if link.is_symlink() else None

    def load(
        self, repo: str, version: str, *, threads: int = 1, run_lock: threading.Lock | None = None
    ) -> Bundle:
        return Bundle(self.repo_dir(repo) / version, threads=threads, run_lock=run_lock)

    def load_current(self, repo: str, *, threads: int = 1) -> Bundle | None:
        version = self.current_version(repo)
        return None if version is None else self.load(repo, version, threads=threads)

    def promote(self, repo: str, version: str) -> None:
        """Verify the bundle, then point ``current`` at it in one atomic rename."""
        Bundle(self.repo_dir(repo) / version)  # raises BundleError: current stays as it is
        repo_dir = self.repo_dir(repo)
        temporary = repo_dir / f".{CURRENT}.{os.getpid()}"
        if temporary.is_symlink() or temporary.exists():
            temporary.unlink()
        temporary.symlink_to(version)
        os.replace(temporary, repo_dir / CURRENT)
        (repo_dir / version / PROMOTED).write_text(datetime.now(UTC).isoformat())
        (repo_dir / version / REJECTED).unlink(missing_ok=True)

    def reject(self, repo: str, version: str, reason: str) -> None:
        (self.repo_dir(repo) / version / REJECTED).write_text(reason + "\n")

    def versions(self, repo: str) -> list[VersionInfo]:
        repo_dir = self.repo_dir(repo)
        if not repo_dir.is_dir():
            return []
        current = self.current_version(repo)
        result = []
        for path in sorted(
            p for p in repo_dir.iterdir() if p.is_dir() and not p.is_symlink() and (p / MANIFEST).is_file()
        ):
            rejected = path / REJECTED
            status = (
                "current"
                if path.name == current
                else "rejected"
                if rejected.is_file()
                else "promoted"
                if (path / PROMOTED).is_file()
                else "candidate"
            )
            metrics_path = path / "metrics.json"
            f1 = None
            if metrics_path.is_file():
                f1 = json.loads(metrics_path.read_text()).get("test", {}).get("micro_f1")
            reason = rejected.read_text().strip() if rejected.is_file() else None
            result.append(VersionInfo(path.name, path, status, reason, f1))
        return result

    def rollback(self, repo: str, version: str | None = None) -> str:
        """Serve ``version``, or the promoted bundle before the current one."""
        if version is None:
            current = self.current_version(repo)
            earlier = [
                v.version
                for v in self.versions(repo)
                if v.status == "promoted" and (current is None or v.version < current)
            ]
            if not earlier:
                raise BundleError(f"{repo}: no earlier promoted bundle to roll back to")
            version = earlier[-1]
        if not (self.repo_dir(repo) / version).is_dir():
            raise BundleError(f"{repo}: no bundle version {version}")
        self.promote(repo, version)
        return version

    def prune(self, repo: str, keep: int) -> list[str]:
        """Delete all but the newest ``keep`` bundles; the one in service is always kept."""
        current = self.current_version(repo)
        versions = [v.version for v in self.versions(repo)]
        removed = []
        for version in versions[: max(len(versions) - keep, 0)]:
            if version != current:
                shutil.rmtree(self.repo_dir(repo) / version)
                removed.append(version)
        return removed
