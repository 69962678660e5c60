"""tools/fixtures/make_debian_paragraphs.py on a tiny fake Packages + Translation-en pair: one sample
per synopsis and per paragraph, Section (without its archive area) as label, duplicates and rare
labels removed, one split per package, rows in package then paragraph order."""
import csv
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tools/fixtures"))
import make_debian_paragraphs as mdp  # noqa: E402

PACKAGES = ("Package: zed\nSection: editors\nDescription: an editor\n\n"
            "Package: alpha\nSection: contrib/net\nDescription: short\n\n"
            "Package: beta\nSection: net\nDescription: short\n\n"
            "Package: gamma\nDescription: no section\n\n"
            "Package: delta\nSection: games\nDescription: short\n")
TRANSLATION = ("Package: zed\nDescription-md5: 1\nDescription-en: An editor\n First  paragraph,\n   two lines.\n .\n"
               "  * a list item\n .\n Last one.\n\n"
               "Package: alpha\nDescription-md5: 2\nDescription-en: Network tool\n Shared boilerplate text.\n\n"
               "Package: beta\nDescription-md5: 3\nDescription-en: Network tool\n Shared boilerplate text.\n .\n Own text.\n\n"
               "Package: gamma\nDescription-md5: 4\nDescription-en: No section here\n Body.\n\n"
               "Package: delta\nDescription-md5: 5\nDescription-en: A game\n")


def lists(tmp_path):
    for name, text in [("x_Packages", PACKAGES), ("x_Translation-en", TRANSLATION)]:
        (tmp_path / f"{name}.txt").write_text(text)
        subprocess.run(["lz4", "-q", str(tmp_path / f"{name}.txt"), str(tmp_path / f"{name}.lz4")], check=True)


def test_paragraphs_split_on_dot_lines_and_collapse_white_space():
    assert mdp.paragraphs("Syn\nfirst  line\n  second\n\n * item\n\n\nlast") == ["Syn", "first line second", "* item", "last"]
    assert mdp.paragraphs("Only a synopsis") == ["Only a synopsis"]


def test_rows_labels_dedup_rare_labels_and_splits(tmp_path):
    lists(tmp_path)
    out = tmp_path / "out.csv"
    r = subprocess.run([sys.executable, str(ROOT / "tools/fixtures/make_debian_paragraphs.py"), str(out), "--translations", str(tmp_path),
                        "--lists", str(tmp_path), "--min-samples", "2"], check=True, capture_output=True, text=True)
    rows = list(csv.DictReader(open(out, newline="", encoding="utf-8")))
    got = [(r["id"], r["label"], r["text"]) for r in rows]
    # alpha (contrib/net → net) keeps its two samples; beta's copies of them (same text, same label)
    # are dropped, its own paragraph kept; gamma has no Section; delta's label `games` has one sample (< 2).
    assert got == [("alpha#0", "net", "Network tool"), ("alpha#1", "net", "Shared boilerplate text."), ("beta#2", "net", "Own text."),
                   ("zed#0", "editors", "An editor"), ("zed#1", "editors", "First paragraph, two lines."),
                   ("zed#2", "editors", "* a list item"), ("zed#3", "editors", "Last one.")]
    for row in rows:
        assert row["split"] == mdp.split_of(row["package"]) and row["package"] == row["id"].split("#")[0]
    assert "7 rows from 3 packages, 2 classes" in r.stderr and "dropped 1 labels" in r.stderr and "games" in r.stderr


def test_split_is_by_package_with_prep_fractions():
    splits = [mdp.split_of(f"pkg{i}") for i in range(20000)]
    assert abs(splits.count("test") / 20000 - 0.1) < 0.01 and abs(splits.count("valid") / 20000 - 0.1) < 0.01


def test_missing_translations_name_the_directory_and_the_fetch(tmp_path):
    lists(tmp_path)
    (tmp_path / "x_Translation-en.lz4").unlink()
    r = subprocess.run([sys.executable, str(ROOT / "tools/fixtures/make_debian_paragraphs.py"), str(tmp_path / "o.csv"),
                        "--translations", str(tmp_path), "--lists", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode != 0 and str(tmp_path) in r.stderr and "--fetch" in r.stderr and not (tmp_path / "o.csv").exists()
