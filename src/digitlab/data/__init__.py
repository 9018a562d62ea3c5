"""Digit data: file readers, verified downloads and the device-resident data module."""
