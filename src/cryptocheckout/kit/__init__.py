"""Shared plumbing that every domain package imports: database, money, jobs, HTTP errors."""
