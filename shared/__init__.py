"""Code that both sides of the service use: settings, database, queue names, imaging.

Nothing imported from here at module level pulls in torch; only `shared.network`
and `shared.artifact` do, and the API never imports them.
"""
