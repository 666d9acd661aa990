"""Speech bandwidth extension (AP-BWE): `mis bwe`, `mis train bwe`, `mis evaluate bwe`."""
