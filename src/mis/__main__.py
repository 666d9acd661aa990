from mis.cli.main import app

app(prog_name="mis")
