"""The ``minis2s`` command line: argument parsing and printing only."""
import argparse
import sys

from . import backend


def _add_backend(parser):
    parser.add_argument("--backend", choices=backend.BACKENDS, default=None,
                        help="array backend (default: $MINIS2S_BACKEND or numpy)")


def cmd_gradcheck(args):
    from . import checks, gradcheck
    if args.backend:
        backend.use(args.backend)
    width = max(len(name) for name in checks.CATALOGUE) + 2
    print(f"finite-difference gradient check, float64, backend {backend.name()}, "
          f"pass if max relative error <= {gradcheck.TOLERANCE:.0e}")
    print(f"{'layer':<{width}}{'max rel. error':>16}  {'worst tensor':<28}result")
    failures = 0
    for name, errors in checks.run_catalogue():
        worst = max(errors, key=errors.get)
        ok = errors[worst] <= gradcheck.TOLERANCE
        failures += not ok
        print(f"{name:<{width}}{errors[worst]:>16.2e}  {worst:<28}{'pass' if ok else 'FAIL'}", flush=True)
    print(f"{len(checks.CATALOGUE) - failures} passed, {failures} failed")
    return 1 if failures else 0


def build_parser():
    parser = argparse.ArgumentParser(prog="minis2s", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    check = commands.add_parser("gradcheck", help="finite-difference check of every layer and the whole model",
                                description="Check every hand-written gradient against central finite "
                                            "differences in float64 and print a table of max relative errors.")
    _add_backend(check)
    check.set_defaults(run=cmd_gradcheck)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except backend.BackendError as error:
        print(f"minis2s: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
