"""The `seg2b` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import EngineError, from_os_error
from .progress import StageProgress
from .shards import DEFAULT_SHARD_MERCHANTS

DEFAULT_RUNS_ROOT = Path("runs")


def _add_executor(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where shards run (same bytes either way)")
    g.add_argument("--executor", choices=("local", "dask"), default=None,
                   help="local: this process (default); dask: a Dask cluster (pip install 'seg2b[dask]')")
    g.add_argument("--workers", type=_positive, default=None, metavar="N",
                   help="dask: start a LocalCluster of N worker processes, one thread each (default: one per core)")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="dask: run on the existing cluster whose scheduler listens at ADDRESS (tcp://host:8786); "
                        "the runs root must be the same shared POSIX path on every node")


def _executor(args):
    """The executor the options name (--workers or --scheduler alone imply dask); used as a context manager."""
    from .executors import make_executor

    name = args.executor or ("dask" if args.workers or args.scheduler else "local")
    log = None if args.quiet else (lambda msg: print(f"seg2b: {msg}", file=sys.stderr))
    return make_executor(name, args.workers, args.scheduler, log=log)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs-root", type=Path, default=DEFAULT_RUNS_ROOT, help="folder holding data/, logs/, reports/")
    p.add_argument("--policies", type=Path, default=None, help="policy folder (default: the project's policies/)")
    p.add_argument("--world-policy", type=Path, default=None, help="a world_policy_v1.json to use instead of the folder's")
    p.add_argument("--quiet", action="store_true")


def _overrides(args) -> dict[str, Path]:
    return {} if args.world_policy is None else {"world_policy_v1": args.world_policy}


def _policy_dir(args) -> Path | None:
    """The policy folder of a lane: the --world-policy overlay once every policy is checked."""
    if args.world_policy is None:
        return args.policies
    from . import preflight
    from .policies import load_policies, overlay_dir
    from .stages import ENGINE_POLICIES, STAGES

    preflight.check_runs_root(args.runs_root)
    policies = load_policies(args.policies, ENGINE_POLICIES, _overrides(args))
    preflight.check_inputs(STAGES, policies, 0)
    return overlay_dir(args.policies, _overrides(args), args.runs_root)


def cmd_run(args) -> int:
    from .pipeline import Pipeline

    # The --world-policy is read from its file and placed in the runs root only once the whole run
    # has passed its checks (a rejected run leaves the root as it was).
    with _executor(args) as executor:
        pipe = Pipeline(args.seed, args.runs_root, args.policies, roster_file=args.roster, force=args.force,
                        upstream=args.upstream, report_path=args.run_report, progress=StageProgress(args.quiet),
                        shard_merchants=args.shard_merchants, policy_overrides=_overrides(args), executor=executor)
        result = pipe.run(until=args.until)
    if not args.quiet:
        for note in pipe.notes + getattr(executor, "notes", []):
            print(f"seg2b: note: {note}", file=sys.stderr)
        print(f"seed {args.seed}: {len(result.stages)} stages in {result.seconds:.2f} s; "
              f"mf={result.ctx.mf[:12]} run_id={result.ctx.run_id}")
    return 0


def cmd_world(args) -> int:
    args.until, args.roster, args.force, args.upstream, args.run_report = "world", None, False, None, None
    args.shard_merchants = DEFAULT_SHARD_MERCHANTS  # the world is one table; shards start with the roster
    args.executor, args.workers, args.scheduler = "local", None, None
    return cmd_run(args)


def cmd_verify(args) -> int:
    from .bundle import verify_bundle

    digest = verify_bundle(args.bundle_dir, args.runs_root)
    print(f"PASS {args.bundle_dir}: sha256_hex = {digest}")
    return 0


def cmd_certify(args) -> int:
    from certification.lanes import run_lane

    policy_dir = _policy_dir(args)
    with _executor(args) as executor:
        return run_lane(args.lane, runs_root=args.runs_root, policy_dir=policy_dir,
                        evidence_root=args.evidence_root, lock=args.lock, ci=args.ci, quiet=args.quiet,
                        seeds=args.seeds, strict=args.strict, summary_to=args.summary_to, executor=executor)


def cmd_compare(args) -> int:
    from certification.compare import compare_records, load_pack, render_markdown

    a, b = load_pack(args.pack_a, "PACK_A"), load_pack(args.pack_b, "PACK_B")
    cmp = compare_records(a, b, label_a=args.pack_a.name, label_b=args.pack_b.name)
    text = "\n".join(["# Comparison", "", *render_markdown(cmp, changed_only=args.changed_only)])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


def cmd_sweep(args) -> int:
    from certification.sweep import run_sweep

    run_sweep(args.lane, args.set, runs_root=args.runs_root, policy_dir=_policy_dir(args),
              evidence_root=args.evidence_root, replay=args.replay, quiet=args.quiet)
    return 0


def _u64(text: str) -> int:
    """A seed: a decimal unsigned 64-bit integer (it is packed as one into every RNG key)."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a decimal integer") from None
    if not 0 <= value < 1 << 64:
        raise argparse.ArgumentTypeError(f"{text} is outside 0 .. 2^64 - 1 (an unsigned 64-bit integer)")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a decimal integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is below 1")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with errors as one line (`seg2b: error: ...`, exit 2), like every other input error."""

    def error(self, message):
        print(f"seg2b: error: {' '.join(str(message).split())}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="seg2b", description="Deterministic Segment 2B routing engine and its certification harness.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("run", help="run world -> roster -> S0..S8 for one seed")
    p.add_argument("--seed", type=_u64, required=True)
    p.add_argument("--until", default=None, help="stop after this state (world, roster, S0..S8)")
    p.add_argument("--roster", type=Path, default=None, help="a user-supplied roster Parquet file")
    p.add_argument("--upstream", type=Path, default=None,
                   help="a user-supplied upstream folder (merchants/site_locations/site_timezones .parquet + validation/)")
    p.add_argument("--force", action="store_true",
                   help="recompute every stage (a replay: publishes nothing new if deterministic)")
    p.add_argument("--run-report", type=Path, default=None, help="write the run report (stage times, publish statuses) here")
    p.add_argument("--shard-merchants", type=_positive, default=DEFAULT_SHARD_MERCHANTS,
                   help="merchants per shard of the roster and S3..S7: bounds peak memory; outputs do not depend on it")
    _add_executor(p)
    _add_common(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("world", help="write the upstream world (merchants, sites, time zones, 1B bundle) for one seed")
    p.add_argument("--seed", type=_u64, required=True)
    _add_common(p)
    p.set_defaults(func=cmd_world)

    p = sub.add_parser("verify", help="re-hash a validation bundle and every output it vouches for; exit 2 unless all verify")
    p.add_argument("bundle_dir", type=Path)
    p.add_argument("--runs-root", type=Path, default=None,
                   help="the runs root of the outputs the bundle vouches for (default: the root the bundle sits in)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("certify", help="run a lane (fast, witness, certify), score the gates, write the evidence pack")
    p.add_argument("--lane", choices=("fast", "witness", "certify"), default="fast")
    p.add_argument("--evidence-root", type=Path, default=Path("evidence"))
    p.add_argument("--lock", action="store_true", help="write evidence/lock.json from this run")
    p.add_argument("--ci", action="store_true", help="compare with evidence/lock.json and fail on any band change")
    p.add_argument("--seeds", type=_u64, nargs="*", default=None, help="override the lane's seeds (for negative controls)")
    p.add_argument("--strict", action="store_true", help="exit 1 unless the verdict is PASS_B or PASS_BPLUS")
    p.add_argument("--summary-to", type=Path, default=None, metavar="FILE",
                   help="append the pack's summary.md to FILE (e.g. \"$GITHUB_STEP_SUMMARY\")")
    _add_executor(p)
    _add_common(p)
    p.set_defaults(func=cmd_certify)

    p = sub.add_parser("compare", help="compare two evidence packs: gates, policy differences, changed and reused states")
    p.add_argument("pack_a", type=Path, metavar="PACK_A")
    p.add_argument("pack_b", type=Path, metavar="PACK_B")
    p.add_argument("--changed-only", action="store_true", help="list only the gates whose value or band moved")
    p.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("sweep", help="score a grid of policy values on common random numbers; write a sweep pack")
    p.add_argument("--lane", choices=("fast", "witness", "certify"), default="fast")
    p.add_argument("--set", action="append", required=True, metavar="POLICY_ID:/json/pointer=v1,v2,...",
                   help="a knob and its values (JSON); repeat for a full grid")
    p.add_argument("--evidence-root", type=Path, default=Path("evidence"))
    p.add_argument("--replay", action="store_true", help="also replay every seed of every point (T-STR-05)")
    _add_common(p)
    p.set_defaults(func=cmd_sweep)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EngineError as exc:
        print(f"seg2b: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # full disk, permission denied, read-only root: the same one line
        print(f"seg2b: error: {from_os_error(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
