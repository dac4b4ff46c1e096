"""Agents, contacts, teams, browser sessions, API tokens, and who may see what."""
