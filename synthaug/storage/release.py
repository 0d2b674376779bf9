"""A release: one finished, audited synthetic set packed by `synthaug release` to leave its site, laid out here and
nowhere else. Another site reads it with `synthaug.data.release.read_release` (evaluate.release).

    <release>/
      release.json          what it holds (`RELEASE_FORMAT`): class names and counts, each file's SHA-256, the set's
                            generation id, the generator in a few words, the gates with their figures and any override,
                            the teacher that made the soft labels, the privacy of the generator's fit (epsilon, delta)
      README.md             the dataset card of the release
      metadata.csv          file_name, label, class_name[, soft_0 ... soft_<K-1>: the teacher's probability of each class]
      recipe.yaml           the recipe the set was made with, its paths reduced to names (nothing of the site's machine)
      audit.json, audit.md  the set's audit (near-copies, fidelity, label fidelity, membership inference), paths removed
      images/<class folder>/<class_idx>_<i:06d>.png   the images, re-encoded without the run's provenance chunk
      model/                the generator (a diffusers DDPMPipeline folder), only when asked (`--with-weights`)

Never a real image: a set of variations of real images (generate --from-real) is refused, and so is every file of
the run other than these. The folder appears in one rename, complete, or not at all.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from synthaug.core.errors import UserError
from synthaug.storage.files import read_json

RELEASE_FORMAT = 1
RELEASE_JSON = "release.json"
IMAGES = "images"
MODEL = "model"
SOFT_PREFIX = "soft_"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class ReleaseDir:
    """The paths of a release folder, and its checks."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.manifest = self.root / RELEASE_JSON
        self.metadata = self.root / "metadata.csv"
        self.card = self.root / "README.md"
        self.recipe = self.root / "recipe.yaml"
        self.audit_json = self.root / "audit.json"
        self.audit_md = self.root / "audit.md"
        self.images = self.root / IMAGES
        self.model = self.root / MODEL

    def read_manifest(self) -> dict:
        """release.json, refused in one line when the folder is not a release or of a newer format."""
        if not self.root.is_dir():
            raise UserError(f"evaluate.release: {self.root} is not a directory (expected a folder made by `synthaug release`)")
        if not self.manifest.is_file():
            raise UserError(f"evaluate.release: {self.root} has no {RELEASE_JSON}; not a folder made by `synthaug release`")
        manifest = read_json(self.manifest, RELEASE_JSON)
        if manifest.get("format") != RELEASE_FORMAT:
            raise UserError(f"{self.manifest}: release format {manifest.get('format')!r}, this synthaug reads {RELEASE_FORMAT}")
        return manifest

    def verify(self, manifest: dict) -> None:
        """Every file release.json lists is here with its SHA-256, and no image is here that it does not list."""
        listed = manifest.get("files", {})
        for name, digest in listed.items():
            path = self.root / name
            if not path.is_file():
                raise UserError(f"{path}: listed in {RELEASE_JSON} but missing; the release is incomplete (copy it again)")
            if file_sha256(path) != digest:
                raise UserError(f"{path}: its SHA-256 differs from {RELEASE_JSON}'s; the file was changed after the release")
        extra = sorted(p.relative_to(self.root).as_posix() for p in self.images.rglob("*") if p.is_file()
                       and p.relative_to(self.root).as_posix() not in listed)
        if extra:
            raise UserError(f"{self.root / extra[0]}: an image {RELEASE_JSON} does not list ({len(extra)} in all); "
                            "a release holds exactly what it lists")
