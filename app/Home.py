"""binlab's Streamlit lab: the entry point (`streamlit run app/Home.py`)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # so views can `import common`

import streamlit as st  # noqa: E402

st.set_page_config(page_title="binlab", page_icon=":material/memory:", layout="wide")

from sitemap import PAGES  # noqa: E402

nav: dict[str, list] = {}
for section, path, title, icon, _ in PAGES:
    nav.setdefault(section, []).append(st.Page(path, title=title, icon=icon, default=path == "views/home.py"))
st.navigation(nav).run()
