"""A stand-in for the repository's flows/ package, used by the dashboard tests only while flows/approval.py
has not landed (the tests prefer the real one whenever it is importable)."""
