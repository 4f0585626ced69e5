#!/usr/bin/env python3
"""`aws` (aws-cli v1) with every EC2 response checked by strict.py.

    python aws_strict.py --endpoint-url http://127.0.0.1:4566 ec2 describe-vpcs

Behaves like `aws`; exits 3 (after printing the problems to stderr) if any
response broke the EC2 model.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import strict  # noqa: E402


def main(argv):
    from awscli.clidriver import create_clidriver

    strict.RECORDER.raise_on_problem = False
    driver = create_clidriver()
    strict.install(driver.session)
    rc = driver.main(argv)
    if strict.RECORDER.problems:
        for op, status, problem, _ in strict.RECORDER.problems:
            print(f"strict: {op} HTTP {status}: {problem}", file=sys.stderr)
        return 3
    if strict.RECORDER.checked == 0 and "ec2" in argv:
        print("strict: no EC2 response was checked", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
