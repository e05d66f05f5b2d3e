"""Tests mirror the packages: tests/<package>/test_<module>.py."""
