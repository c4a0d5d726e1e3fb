"""Tests of the fake downloader service."""
