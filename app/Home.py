"""binlab's Streamlit lab: the entry point (`streamlit run app/Home.py`)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # so views can `import common`

import streamlit as st  # noqa: E402

st.set_page_config(page_title="binlab", page_icon=":material/memory:", layout="wide")

PAGES = {
    "Lab": [
        st.Page("views/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("views/binarize.py", title="Binarize (live)", icon=":material/tune:"),
        st.Page("views/train.py", title="Train (QAT)", icon=":material/model_training:"),
        st.Page("views/sensitivity.py", title="Sensitivity", icon=":material/grid_on:"),
        st.Page("views/landscape.py", title="Loss landscape", icon=":material/landscape:"),
        st.Page("views/attention.py", title="Attention", icon=":material/visibility:"),
        st.Page("views/deploy.py", title="Deploy", icon=":material/rocket_launch:"),
        st.Page("views/compare.py", title="Compare runs", icon=":material/compare_arrows:"),
    ],
    "Learn": [
        st.Page("views/lessons.py", title="Lessons", icon=":material/school:"),
    ],
    "Reference": [
        st.Page("views/results.py", title="Results", icon=":material/table_chart:"),
    ],
}
st.navigation(PAGES).run()
