"""Leaderboard: result files -> static site."""
