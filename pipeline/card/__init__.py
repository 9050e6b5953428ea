"""The dataset card: what a prepared dataset holds, as `card.json` and a `card.html` page.

`data.card_data` sums up prepare's songs, rejects and duplicate groups into a JSON-safe dict;
`html.card_html` draws that dict as one self-contained page (inline SVG charts, no scripts).
"""
