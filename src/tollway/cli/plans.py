"""``tollway plans``: check catalog files and show their route tables."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tollway.plans.catalog import CompiledCatalog
from tollway.plans.errors import CatalogError
from tollway.plans.loader import load_compiled_catalog, read_yaml_file
from tollway.plans.publish import publish
from tollway.plans.realtime import explain
from tollway.plans.versions import SEPARATOR, version_digest, versions_of
from tollway.settings import Settings


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    plans = commands.add_parser("plans", help="check plan catalogs (YAML or Kubernetes ConfigMap)")
    sub = plans.add_subparsers(dest="plans_command", required=True, metavar="COMMAND")

    validate = sub.add_parser("validate", help="check catalog files; print every problem with file:line:column")
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE")

    publish = sub.add_parser(
        "publish",
        help="stamp every plan version not yet published with its digest (in place): from then on it is immutable",
    )
    publish.add_argument("file", type=Path, metavar="FILE")

    routes = sub.add_parser("routes", help="print a catalog's route table in precedence order")
    routes.add_argument("file", type=Path, metavar="FILE")


def _load(path: Path) -> CompiledCatalog | None:
    try:
        return load_compiled_catalog(path)
    except CatalogError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{path}: cannot read: {exc}", file=sys.stderr)
    return None


def _validate(files: list[Path]) -> int:
    failed = False
    for path in files:
        compiled = _load(path)
        if compiled is None:
            failed = True
            continue
        catalog = compiled.catalog
        bare = [plan_id for plan_id in catalog.plans if SEPARATOR not in plan_id]
        versioned = {plan_id: versions_of(catalog.plans, plan_id) for plan_id in bare}
        counted = len({plan_id.split(SEPARATOR)[0] for plan_id in catalog.plans})
        shown = "; ".join(f"{p} versions {', '.join(map(str, n))}" for p, n in versioned.items() if n)
        print(
            f"{path}: ok — catalog {compiled.name} version {compiled.version}, {counted} plans"
            f"{f' ({shown})' if shown else ''}, {len(catalog.features)} features, digest {compiled.digest}"
        )
        for plan_id in catalog.plans:  # prepaid or spend-capped plans: what burns per request, what waits
            if versioned.get(plan_id):
                continue  # a versioned plan's bare id is its version 1, shown as such
            terms = compiled.money_terms(plan_id)
            if terms is not None:
                print("\n".join(explain(terms)))
        drafts = [
            plan_id for plan_id, plan in catalog.plans.items() if not versioned.get(plan_id) and not plan.published
        ]
        if shown and drafts:  # a catalog with versions: say which may still change
            print(f"  not published yet (editable until `tollway plans publish`): {', '.join(drafts)}")
        for plan_id, plan in catalog.plans.items():
            if plan.correction and not versioned.get(plan_id) and plan.published != version_digest(plan):
                print(f"  {plan_id} corrected in place ({plan.correction}): it now digests to {version_digest(plan)}")
    return 1 if failed else 0


def _publish(path: Path) -> int:
    """Stamp the unpublished versions of ``path``; nothing is written when the catalog is not valid."""
    try:
        text = read_yaml_file(path)
        stamped, stamps = publish(text, str(path))
    except CatalogError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return 1
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{path}: cannot read: {exc}", file=sys.stderr)
        return 1
    if stamped != text:
        temporary = path.with_name(f".{path.name}.publishing")
        try:
            temporary.write_text(stamped, encoding="utf-8", newline="")
            temporary.replace(path)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            print(f"{path}: cannot write: {exc}", file=sys.stderr)
            return 1
    for stamp in stamps:
        if stamp.line:
            print(f"{path}:{stamp.line}: published {stamp.plan_id} ({stamp.where}) as {stamp.digest}")
        else:
            print(f"{path}: {stamp.plan_id} not published: {stamp.reason}", file=sys.stderr)
    if not stamps:
        print(f"{path}: every plan version is already published")
    return 1 if any(not stamp.line for stamp in stamps) else 0


def _routes(path: Path) -> int:
    compiled = _load(path)
    if compiled is None:
        return 1
    rows = [(",".join(e.methods), e.match.route, e.kind, e.match.feature, str(e.match.cost)) for e in compiled.routes]
    header = ("METHODS", "PATH", "KIND", "FEATURE", "COST")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Exit status: 0 when every file is valid, 1 otherwise. ``settings`` is unused (no Redis needed)."""
    if args.plans_command == "validate":
        return _validate(list(args.files))
    if args.plans_command == "publish":
        return _publish(args.file)
    if args.plans_command == "routes":
        return _routes(args.file)
    raise ValueError(f"unknown plans command {args.plans_command!r}")
