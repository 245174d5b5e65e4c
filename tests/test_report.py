from flexguard.metrics import breakdown
from flexguard.report import breakdown_markdown


def test_breakdown_table_survives_group_names_from_the_data():
    groups = breakdown([10.0, 90.0, 70.0], [0, 4, 3], ["a|b", "a|b", "line\nbreak"])
    lines = breakdown_markdown(groups, "By source")
    rows = [line for line in lines if line.startswith("| a") or line.startswith("| line")]
    assert rows[0].startswith("| a\\|b | 2 |") and rows[1].startswith("| line break | 1 |")
    header = next(line for line in lines if line.startswith("| group"))
    assert all(r.count(" | ") == header.count(" | ") for r in rows)  # every row has the header's columns
