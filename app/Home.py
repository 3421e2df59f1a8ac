"""binlab: placeholder home page until the lab's pages land."""
import streamlit as st

st.set_page_config(page_title="binlab", layout="wide")
st.title("binlab: binarize a language model")
st.write("The interactive lab is being built. Use the CLI meanwhile: `binlab --help`.")
