"""The original placement service, rebuilt for comparison: Flask +
scikit-learn (DictVectorizer + RandomForestClassifier(n_estimators=512,
max_depth=16)), served by gunicorn. Same request and response shapes as
ferry-inference's POST /predict.

    MODEL=model.pkl gunicorn --bind 127.0.0.1:9697 original_app:app
    python original_app.py train DATA.csv model.pkl
"""
import os
import pickle
import sys

import pandas as pd
from flask import Flask, jsonify, request


def train(data_path, out_path):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.feature_extraction import DictVectorizer

    df = pd.read_csv(data_path)
    y = (df.pop("status") == "Placed").astype(int).values
    dv = DictVectorizer(sparse=False)
    X = dv.fit_transform(df.to_dict(orient="records"))
    model = RandomForestClassifier(n_estimators=512, max_depth=16, random_state=1).fit(X, y)
    with open(out_path, "wb") as f:
        pickle.dump((dv, model), f)


app = Flask("placement")
if "MODEL" in os.environ:
    with open(os.environ["MODEL"], "rb") as f:
        dv, model = pickle.load(f)


@app.route("/predict", methods=["POST"])
def predict():
    df = pd.DataFrame(request.get_json())
    X = dv.transform(df.to_dict(orient="records"))
    probability = model.predict_proba(X)[0, 1]
    return jsonify({"Placement_Probability": float(probability), "Placement": bool(probability >= 0.5)})


@app.route("/health", methods=["GET"])
def health():
    return jsonify({"status": "healthy"})


if __name__ == "__main__" and sys.argv[1:2] == ["train"]:
    train(sys.argv[2], sys.argv[3])
