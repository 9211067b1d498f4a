# Build the Artveil onedir bundle for Windows:
#   powershell -ExecutionPolicy Bypass -File installer\build.ps1 [-Variant cpu|cuda] [-CudaIndex URL]
#
# The variant is the torch wheel in the build venv (build\installer\<variant>\venv, separate from .venv):
#   cpu   torch==2.13.0 from PyPI (on Windows PyPI's wheel is the CPU build)
#   cuda  torch==2.13.0 from the PyTorch index for one CUDA version (-CudaIndex; pick the one
#         https://pytorch.org/get-started lists for torch 2.13 and your driver)
# $env:ARTVEIL_TORCH_SPEC replaces those pip arguments. The result is dist\artveil-windows-<variant>\.
param(
    [ValidateSet("cpu", "cuda")] [string] $Variant = "cpu",
    [string] $CudaIndex = "https://download.pytorch.org/whl/cu128",
    [string] $Python = "py"
)
$ErrorActionPreference = "Stop"
$started = Get-Date

$Root = Resolve-Path (Join-Path $PSScriptRoot "..")
$Work = Join-Path $Root "build\installer\$Variant"
$Venv = Join-Path $Work "venv"
$Dist = Join-Path $Root "dist\artveil-windows-$Variant"
$Py = Join-Path $Venv "Scripts\python.exe"

function Step($message) { Write-Host "build: $message" }
function Check($what) { if ($LASTEXITCODE -ne 0) { throw "build: $what failed (exit $LASTEXITCODE)" } }

New-Item -ItemType Directory -Force -Path $Work | Out-Null
if (-not (Test-Path $Py)) {
    Step "creating the build venv ($Venv)"
    if ($Python -eq "py") { & py -3 -m venv $Venv } else { & $Python -m venv $Venv }
    Check "creating the venv (install Python 3.10+ from python.org)"
}

& $Py -c "import torch" 2>$null
if ($LASTEXITCODE -ne 0) {
    if ($env:ARTVEIL_TORCH_SPEC) { $torchArgs = $env:ARTVEIL_TORCH_SPEC -split "\s+" }
    elseif ($Variant -eq "cuda") { $torchArgs = @("torch==2.13.0", "--index-url", $CudaIndex) }
    else { $torchArgs = @("torch==2.13.0") }
    Step "installing $($torchArgs -join ' ')"
    & $Py -m pip install -q --disable-pip-version-check @torchArgs
    Check "installing torch"
}

# The wheel decides the variant; refuse to label a CUDA bundle "cpu" or the other way round.
$cuda = & $Py -c "import torch; print(torch.version.cuda or 'none')"
if (($Variant -eq "cpu" -and $cuda -ne "none") -or ($Variant -eq "cuda" -and $cuda -eq "none")) {
    throw "build: the build venv's torch (CUDA: $cuda) does not match the '$Variant' variant; delete $Venv and run again."
}

Step "installing Artveil and PyInstaller into the build venv"
& $Py -m pip install -q --disable-pip-version-check -e "$Root[installer]"
Check "installing Artveil"

Step "running PyInstaller (several minutes)"
& $Py -m PyInstaller --noconfirm --log-level WARN --workpath (Join-Path $Work "pyinstaller") `
    --distpath (Join-Path $Work "dist") (Join-Path $Root "installer\artveil.spec")
Check "PyInstaller"
if (Test-Path $Dist) { Remove-Item -Recurse -Force $Dist }
New-Item -ItemType Directory -Force -Path (Split-Path $Dist) | Out-Null
Move-Item (Join-Path $Work "dist\artveil") $Dist

# artveil-gui.exe is a windowed program: it prints nothing to a console, so judge it by its exit code.
Step "self-test of the bundle"
$test = Start-Process -FilePath (Join-Path $Dist "artveil-gui.exe") -ArgumentList "--self-test" -Wait -PassThru -NoNewWindow
if ($test.ExitCode -ne 0) { throw "build: the bundle's self-test failed (exit $($test.ExitCode))" }
$seconds = [int]((Get-Date) - $started).TotalSeconds
Step "done in $seconds s: $Dist (self-test passed)"
