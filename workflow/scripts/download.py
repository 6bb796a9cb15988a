"""Download one CMD file with resume, size and sha256 checks (rule `download`)."""

import argparse
import json
from pathlib import Path

import _bootstrap

from cosmodiff import camels


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--url", required=True, help="address of the file")
    ap.add_argument("--checks", default="{}", help='JSON {"size": bytes or null, "sha256": hex or null}')
    ap.add_argument("--out", required=True, type=Path, help="destination file")
    ap.add_argument("--retries", type=int, default=5, help="extra attempts after a dropped connection")
    args = ap.parse_args(argv)
    log = _bootstrap.setup_logging()
    checks = json.loads(args.checks)
    log.info("downloading %s -> %s (checks: %s)", args.url, args.out, checks)
    try:
        camels.download(args.url, args.out, sha256=checks.get("sha256"), size=checks.get("size"), retries=args.retries)
    except camels.DownloadError as err:
        log.error("%s", err)
        return 1
    log.info("done: %s", args.out)
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
