"""Map the repository's top-level folders onto the `aichaos` package.

Each folder of the architecture (harness/, scenarios/, ...) installs as a subpackage
(`aichaos.harness`, ...), so the repository shows the architecture while an installed
wheel keeps everything under one name. Subpackages are discovered, never listed by hand.
"""

from setuptools import find_packages, setup

FOLDERS = ["harness", "scenarios", "experiments", "slo", "reports", "fixtures"]

packages = ["aichaos"]
package_dir = {"aichaos": "src/aichaos"}
for folder in FOLDERS:
    for sub in [folder, *(f"{folder}.{p}" for p in find_packages(folder))]:
        packages.append(f"aichaos.{sub}")
        package_dir[f"aichaos.{sub}"] = sub.replace(".", "/")

setup(packages=packages, package_dir=package_dir)
