"""Sharing across sites: a synthetic set packed to leave its site (`synthaug release`), with its gates."""
