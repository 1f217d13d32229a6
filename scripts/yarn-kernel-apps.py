"""Print one line per live YARN application ("yarn-app <id> <name>") on the given ResourceManagers: what the
test run's kernels left running. Used by scripts/test.sh's leftover check.

    python scripts/yarn-kernel-apps.py http://127.0.0.1:8088 [http://127.0.0.1:18088 ...]

A ResourceManager that does not answer (a standby, or one a test stopped) is skipped.
"""

from __future__ import annotations

import json
import sys
import urllib.request

LIVE = "NEW,NEW_SAVING,SUBMITTED,ACCEPTED,RUNNING"


def main() -> int:
    seen = set()
    for endpoint in sys.argv[1:]:
        url = f"{endpoint.rstrip('/')}/ws/v1/cluster/apps?states={LIVE}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                apps = ((json.load(response) or {}).get("apps") or {}).get("app") or []
        except (OSError, ValueError):
            continue
        for app in apps:
            if app["id"] not in seen:
                seen.add(app["id"])
                print(f"yarn-app {app['id']} {app.get('name', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
