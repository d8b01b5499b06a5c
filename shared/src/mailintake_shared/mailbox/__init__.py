"""Mail-server clients (IMAP, POP3) behind small typed interfaces, with one error taxonomy.

Shared by the fetcher (polls) and the config API (test connection, the estimate before
enabling).
"""
