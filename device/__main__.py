"""``python -m device [DEVICE]``: show which backend would be chosen and why the others are not."""

from __future__ import annotations

import argparse
import sys

from device.backend import ENV_VAR, KINDS, DeviceError, select_backend, unavailable_reason


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m device", description=__doc__)
    parser.add_argument("device", nargs="?", default=None,
                        help=f"auto, cpu, cuda[:N], npu[:N] (default: ${ENV_VAR}, else auto)")
    parser.add_argument("--dtype", default=None, help="auto, float32, bfloat16, float16")
    args = parser.parse_args(argv)

    for kind in KINDS:
        reason = unavailable_reason(kind)
        print(f"{kind:5s} {'available' if reason is None else 'unavailable: ' + reason}")
    try:
        backend = select_backend(args.device, args.dtype)
    except DeviceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"chosen: {backend.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
