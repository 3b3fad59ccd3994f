"""Install a site profile where `snakemake --profile NAME` finds it (`make setup` runs this for profiles/slurm).

Snakemake resolves a bare profile name in the current directory, then in its user folder (platformdirs:
$XDG_CONFIG_HOME/snakemake or ~/.config/snakemake on Linux), then its site folder (/etc/xdg/snakemake). This links
<user folder>/<name> to the repository's profile folder, so its SITE keys are edited in one place. Idempotent; an
existing <user folder>/<name> that is not a link to this folder is left as it is (said on stdout), except a dangling
link to another clone's profiles/<name>, which holds nothing and is replaced.

    python -m warmbench.tools.site_profile [SOURCE_DIR] [NAME]   # defaults: profiles/slurm, slurm
"""
from __future__ import annotations

import os
import sys
from pathlib import Path


def user_profile_dir() -> Path:
    """The user folder in which Snakemake looks for named profiles (as snakemake.cli.get_profile_dir does)."""
    from platformdirs import AppDirs

    return Path(AppDirs("snakemake", "snakemake").user_config_dir)


def install(source: Path, name: str = "slurm", folder: Path | None = None) -> tuple[str, Path]:
    """Link folder/name to source. Returns (what happened: "linked", "present" or "kept", the link's path)."""
    source = Path(source).resolve()
    if not (source / "config.yaml").is_file():
        raise FileNotFoundError(f"{source}/config.yaml: no profile to install")
    link = (folder or user_profile_dir()) / name
    if link.is_symlink():
        if link.resolve() == source:
            return "present", link
        ours_gone = not link.exists() and Path(os.readlink(link)).parts[-2:] == ("profiles", name)
        if not ours_gone:
            return "kept", link
        link.unlink()
    elif link.exists():
        return "kept", link
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(source, target_is_directory=True)
    return "linked", link


def main(argv: list[str]) -> int:
    source = Path(argv[0]) if argv else Path("profiles/slurm")
    name = argv[1] if len(argv) > 1 else "slurm"
    outcome, link = install(source, name)
    if outcome == "kept":
        print(f"{link} exists and is not a link to {source.resolve()}: left as it is. `snakemake --profile {name}` "
              f"uses it; `--profile {source}` uses warmbench's (or remove {link} and run `make setup` again).")
    elif outcome == "linked":
        print(f"`snakemake --profile {name}` now uses {source}: {link} -> {source.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
