// The guestbook's script: marks the entry just added (?added=ID) so the writer finds it.
document.addEventListener("DOMContentLoaded", () => {
  const added = new URLSearchParams(window.location.search).get("added");
  if (!added) {
    return;
  }
  const item = document.getElementById(`entry-${added}`);
  if (item) {
    item.style.background = "#fff7d6";
    item.scrollIntoView({ block: "center" });
  }
});
