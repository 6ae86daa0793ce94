"""Prediction on new scans (`mfns-predict`): input discovery and checks (`inputs`), output names (`naming`),
the trained model (`model`), the stock nnU-Net predictor call (`predictor`) and the whole run (`pipeline`).
Nothing is imported here, so importing the package stays cheap (torch is only loaded by `predictor`)."""
