"""Capturing a guest's dirty page profile (``rtmig profile capture``)."""
