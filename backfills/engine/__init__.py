"""The engine: claims runs, walks chunks, records progress. Nothing here prints.

``ledger`` alone writes run rows; ``runner`` holds the loop; the other modules are the steps
the loop calls (gate, step, retry, pacing) and what it checks before it starts.
"""
