"""The README's layer table is the rule: each Swift target imports only targets in rows above its
own, and the table lists exactly the package's source targets."""
import json
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
EXTERNAL = {"Foundation", "Testing", "Glibc", "Darwin", "Dispatch", "Crypto", "ArgumentParser", "Yams", "XCTest", "SwiftProtobuf", "FoundationEssentials"}


def layer_rows():
    """{target: row} from the README's `| layer | target | knows |` table."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| layer | target | knows |"):].split("\n\n")[0].splitlines()[2:]
    rows = {}
    for row, line in enumerate(table):
        for name in re.findall(r"`Sources/([A-Za-z]+)`", line.split("|")[2]):
            rows[name] = row
    return rows


def package():
    out = subprocess.run(["swift", "package", "describe", "--type", "json"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out[out.index("{"):])


def test_every_import_points_down_the_table():
    rows = layer_rows()
    targets = {t["name"]: t for t in package()["targets"]}
    sources = {name: t for name, t in targets.items() if t["type"] != "test" and t["path"].startswith("Sources/")}
    by_dir = {Path(t["path"]).name: name for name, t in sources.items()}
    assert sorted(by_dir) == sorted(rows), "README's layer table and Package.swift list different targets"
    problems = []
    for directory, name in by_dir.items():
        row = rows[directory]
        for dep in sources[name].get("target_dependencies", []):
            dep_dir = Path(targets[dep]["path"]).name
            if rows.get(dep_dir, -1) >= row:
                problems.append(f"Package.swift: {name} depends on {dep}, which is not above it")
        for f in sorted((ROOT / "Sources" / directory).rglob("*.swift")):
            for m in re.finditer(r"^(?:@[\w()]+ )*import (\w+)", f.read_text(), re.M):
                imported = m.group(1)
                if imported in EXTERNAL:
                    continue
                if rows.get(imported, 99) >= row:
                    problems.append(f"{f.relative_to(ROOT)} imports {imported}, which is not above {directory}")
    assert not problems, "\n".join(problems)


LIBRARIES = ["LMDB", "KDStore", "KDTrain", "KDTeachers", "KDReport", "KDJobs"]
FLAG = re.compile(r"--[a-z]")


def code_part(line):
    """`line` up to its `//` comment: the first `//` outside a string literal (an even number of
    unescaped quotes before it)."""
    quotes = 0
    for i, ch in enumerate(line):
        if ch == '"' and (i == 0 or line[i - 1] != "\\"):
            quotes += 1
        elif line.startswith("//", i) and quotes % 2 == 0:
            return line[:i]
    return line


def test_no_library_string_names_a_flag():
    """Issue 11's error convention: hints are `Hint` cases that the CLI renders as flags, so no
    library source line names a CLI flag (`--force`, `--out`) outside comments."""
    found = []
    for lib in LIBRARIES:
        for path in sorted((ROOT / "Sources" / lib).rglob("*.swift")):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if FLAG.search(code_part(line)):
                    found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "library code names CLI flags:\n" + "\n".join(found)


def test_the_flag_scan_sees_strings_and_skips_comments():
    assert FLAG.search(code_part('throw E(hint: "Pass --force")'))
    assert not FLAG.search(code_part('let x = 1 // pass --force'))
    assert FLAG.search(code_part('let url = "http://x" + "--out"'))
