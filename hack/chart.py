#!/usr/bin/env python3
"""Renders and lints charts/lxd-operator with Helm's own library (PyPI helm-python-sdk), for
tests: `hack/chart.py VALUES_JSON` prints {"templates": {path: manifest}, "crds": [...],
"lint": report} as JSON, or the error and exit status 2 when Helm refuses the values."""

import json
import pathlib
import sys

import helm_python as helm

CHART = pathlib.Path(__file__).resolve().parent.parent / "charts" / "lxd-operator"


def main() -> int:
    values = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    try:
        chart = helm.Chart.load(CHART)
        chart.validate_schema(values)
        templates = chart.render(values, name="lxd-operator", namespace="lxd-system", is_install=True)
        lint = helm.lint(CHART, values, namespace="lxd-system", strict=False)
    except helm.HelmError as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return 2
    json.dump({"templates": templates, "crds": chart.crds, "lint": lint}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
